"""The per-process objects every part shares: settings, the task store, the callback HTTP pool.

Built lazily once per process (after a prefork child is forked, so no socket is
shared across processes) and reset by tests that need other settings. The API
and the worker take a :class:`Context` and pass it on explicitly; only process
entry points (the Celery task, the CLI, ``create_app``) call :func:`current`.
"""
from __future__ import annotations

import logging
import os
import typing as t
from pathlib import Path


from httpqueue.config import Settings
from httpqueue.connections import check_broker, redis_client
from httpqueue.delivery.signing import WebhookSigner
from httpqueue.delivery.ssrf import CallbackPolicy
from httpqueue.etcd import EtcdCluster
from httpqueue.nodes import RedisRegistry, Registry
from httpqueue.store.keys import Keys
from httpqueue.store.schedules import ScheduleStore
from httpqueue.store.series import Series
from httpqueue.store.tasks import TaskStore
from httpqueue.store.topics import TopicControls

DELIVERY_THREADS = 100
"""Callbacks in flight at once per worker process, across all its messages (on its delivery loop)."""

EMBEDDED_URL_FILE = "redis.url"
"""File in ``data_dir`` where ``httpqueue run`` writes its embedded Redis URL, for other commands to find."""


def resolve_redis_url(settings: Settings) -> str:
    """The configured Redis, else the embedded one ``httpqueue run`` started, else local Redis."""
    if settings.redis_url:
        return settings.redis_url
    marker = Path(settings.data_dir) / EMBEDDED_URL_FILE
    if marker.exists():
        return marker.read_text().strip()
    return "redis://127.0.0.1:6379/0"


class Context:
    """Everything a process needs to serve requests or deliver callbacks.

    Every part is built here, at once (each is cheap: no connection is opened
    until first used, except one ``INFO cluster`` asking whether the store is a
    Redis Cluster, see :func:`httpqueue.connections.cluster_enabled`). Not lazily with :func:`functools.cached_property`: on
    Python 3.11 its lock belongs to the class, so a prefork child forked while
    a worker thread (the promoter, the scheduler) was filling in a property
    inherits that lock held, and its first task hangs for ever on it.
    """

    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self.redis_url = resolve_redis_url(settings)
        self.keys = Keys(settings.key_prefix, settings.shards)
        client = redis_client(self.redis_url, s.sentinel_master)
        check_broker(client, s.broker_url)  # before anything starts: a cluster store needs a broker of its own
        self.store = TaskStore(
            client, self.keys,
            horizon_ms=s.horizon_ms, lease_ms=s.lease_ms, retention_ms=s.retention_ms, batch=s.promote_batch,
            dead_retention_ms=s.dead_retention_ms, direct_ms=s.direct_ms,
            min_replicas=s.create_min_replicas, replica_timeout_ms=s.replica_timeout_ms)
        self.topics = TopicControls(self.store, settings)
        """Pause, limits, circuit breakers and dead letters of topics."""
        self.schedules = ScheduleStore(self.store)
        """Recurring schedules (cron definitions and their next ticks)."""
        self.series = Series(self.store)
        """Per-minute delivery statistics (the dashboard's charts)."""
        self.callback_policy = CallbackPolicy.from_strings(settings.callback_allow)
        """Where callbacks may go despite the SSRF guard (``callback_allow``, or etcd's allow-list)."""
        self.cluster: EtcdCluster | None = None
        """With ``etcd_endpoints``: the cluster-wide settings in etcd, watched (see :mod:`httpqueue.etcd`)."""
        self.registry: Registry = RedisRegistry(client, self.keys)
        """The node registry: in Redis, or on etcd leases when etcd is configured."""
        if s.etcd_endpoints:
            self.cluster = EtcdCluster(settings, self.store, self._allow)
            self.topics, self.schedules = self.cluster.topics, self.cluster.schedules
            self.registry = self.cluster.registry
            self.cluster.start()
        self.signer = WebhookSigner(list(settings.signing_secrets)) if settings.signing_secrets else None
        """Signs callbacks (Standard Webhooks) when ``signing_secrets`` are set."""
        if s.export_max_events:
            _enable_export(client, self.keys, s.export_max_events)


    def _allow(self, allowed: tuple[str, ...] | None) -> None:
        """Take etcd's callback allow-list (None: this node's own ``callback_allow`` again)."""
        self.callback_policy = CallbackPolicy.from_strings(self.settings.callback_allow if allowed is None else allowed)

    def warnings(self) -> tuple[str, ...]:
        """What this process runs without (etcd unreachable), for ``/ready`` and ``/status``."""
        return self.cluster.warnings() if self.cluster else ()


def _enable_export(client: t.Any, keys: Keys, max_events: int) -> None:
    """Turn event writing on for ``httpqueue export`` (see :mod:`httpqueue.export.switch`); never fails a start."""
    from httpqueue.export import switch
    from httpqueue.store.scripts import REDIS_ERRORS

    try:
        switch.enable(client, keys, max_events)
    except REDIS_ERRORS:
        logging.getLogger("httpqueue").warning(
            "could not turn event export on (Redis unreachable); `httpqueue export` turns it on when it starts")


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
