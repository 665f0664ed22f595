"""The per-process objects every part shares: settings, the task store, the HTTP session.

Built lazily once per process (after a prefork child is forked, so no socket is
shared across processes) and reset by tests that need other settings.
"""
from __future__ import annotations

import functools
import os
import time
import typing as t
from pathlib import Path

from httpqueue.config import Settings
from httpqueue.connections import redis_client
from httpqueue.keys import Keys
from httpqueue.store import TaskStore

DELIVERY_THREADS = 100
"""Callbacks in flight at once per worker process, across all its messages (threads mostly wait on I/O)."""

MAX_PENDING = 4 * DELIVERY_THREADS
"""Most handed-off tasks per worker process; a delivery message beyond that waits for room."""

EMBEDDED_URL_FILE = "redis.url"
"""File in ``data_dir`` where ``httpqueue run`` writes its embedded Redis URL, for other commands to find."""


def now_ms() -> int:
    return int(time.time() * 1000)


def resolve_redis_url(settings: Settings) -> str:
    """The configured Redis, else the embedded one ``httpqueue run`` started, else local Redis."""
    if settings.redis_url:
        return settings.redis_url
    marker = Path(settings.data_dir) / EMBEDDED_URL_FILE
    if marker.exists():
        return marker.read_text().strip()
    return "redis://127.0.0.1:6379/0"


class Context:
    """Everything a process needs to serve requests or deliver callbacks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis_url = resolve_redis_url(settings)
        self.keys = Keys(settings.key_prefix, settings.shards)

    @functools.cached_property
    def store(self) -> TaskStore:
        s = self.settings
        return TaskStore(
            redis_client(self.redis_url, s.sentinel_master), self.keys,
            horizon_ms=int(s.timer_horizon * 1000), lease_ms=int(s.lease * 1000),
            retention_ms=int(s.retention * 1000), batch=s.promote_batch,
            dead_retention_ms=int(s.dead_letter_retention * 1000),
            direct_ms=int(max(0.5, 2 * s.promoter_interval + 0.1) * 1000),
            min_replicas=s.create_min_replicas, replica_timeout_ms=int(s.create_replica_timeout * 1000))

    @functools.cached_property
    def topics(self) -> "TopicControls":
        """Pause, limits, circuit breakers and dead letters of topics."""
        from httpqueue.topics import TopicControls

        return TopicControls(self.store, self.settings)

    @functools.cached_property
    def callback_policy(self) -> t.Any:
        """Where callbacks may go despite the SSRF guard (``callback_allow``)."""
        from httpqueue.ssrf import CallbackPolicy

        return CallbackPolicy.from_strings(self.settings.callback_allow)

    @functools.cached_property
    def http(self) -> t.Any:
        """urllib3 pool manager for callbacks: keep-alive connections, SSRF-guarded."""
        from httpqueue.ssrf import guarded_pool

        return guarded_pool(self.callback_policy, maxsize=DELIVERY_THREADS)

    @functools.cached_property
    def series(self) -> t.Any:
        """Per-minute delivery statistics (the dashboard's charts)."""
        from httpqueue.series import Series

        return Series(self.store)

    @functools.cached_property
    def launcher(self) -> t.Any:
        """Runs callbacks at their offsets on I/O threads, off the Celery pool (see :mod:`httpqueue.launcher`)."""
        from httpqueue.launcher import Launcher

        return Launcher(DELIVERY_THREADS, MAX_PENDING)

    @functools.cached_property
    def signer(self) -> t.Any:
        if not self.settings.signing_secrets:
            return None
        from httpqueue.signing import WebhookSigner

        return WebhookSigner(list(self.settings.signing_secrets))


_current: Context | None = None
_pid: int | None = None
_settings: Settings | None = None


def current() -> Context:
    """This process's context: built on first use, and again in a forked child (fresh sockets)."""
    global _current, _pid, _settings
    if _current is None or _pid != os.getpid():
        _settings = _settings or Settings.load()
        _current, _pid = Context(_settings), os.getpid()
    return _current


def installed() -> bool:
    """Whether settings were installed or loaded in this process already."""
    return _settings is not None


def install(settings: Settings) -> Context:
    """Make explicit settings (CLI options, tests) this process's and its children's."""
    global _current, _pid, _settings
    _settings = settings
    _current, _pid = Context(settings), os.getpid()
    return _current
