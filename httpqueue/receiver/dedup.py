"""Remembering which tasks were handled, so a repeated attempt is acknowledged without running twice.

httpqueue delivers at least once: an attempt whose answer was lost (a
timeout, a reset, a worker killed mid-POST) is sent again with the same task
id and a higher attempt number. A store here claims each id before its
handler runs:

* :attr:`Claim.NEW`: first sight, run the handler, then :meth:`~DedupStore.finish`
  (remembered as done for ``done_ttl``), or :meth:`~DedupStore.release` if it failed;
* :attr:`Claim.DONE`: handled before, acknowledge with ``{"code": 100}``;
* :attr:`Claim.RUNNING`: another attempt is being handled now (its answer was
  late): ask httpqueue to come back (``{"code": 101}``) rather than run it twice
  or claim a success that may not come. A claim left by a crashed receiver
  lapses after ``running_ttl``.

:class:`RedisDedupStore` (``SET NX`` with expiry) works across processes and
hosts; :class:`MemoryDedupStore` only within one process.
"""
from __future__ import annotations

import enum
import threading
import time
import typing as t

RUNNING_TTL = 600.0
"""Seconds a claim of a running handler holds: longer than any handler runs, short enough to recover a crash."""

DONE_TTL = 7 * 86_400.0
"""Seconds a handled id is remembered: longer than httpqueue retries a task (its ``max_duration``)."""

KEY_PREFIX = "httpqueue:receiver:"


class Claim(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DONE = "done"


class DedupStore(t.Protocol):
    """Where handled ids are kept; any object with these three methods will do."""

    def claim(self, task_id: str) -> Claim:
        """Claim ``task_id`` for a handler if nobody has; say what state it is in otherwise."""

    def finish(self, task_id: str) -> None:
        """The handler succeeded: remember ``task_id`` as done."""

    def release(self, task_id: str) -> None:
        """The handler failed or asked to slow down: the next attempt runs it again."""


class RedisDedupStore:
    """Claims as Redis keys: ``SET key running NX EX running_ttl``, then ``done`` for ``done_ttl``."""

    def __init__(self, client: t.Any, prefix: str = KEY_PREFIX, running_ttl: float = RUNNING_TTL,
                 done_ttl: float = DONE_TTL) -> None:
        self.redis = client
        self.prefix = prefix
        self.running_ms = int(running_ttl * 1000)
        self.done_ms = int(done_ttl * 1000)

    @classmethod
    def from_url(cls, url: str, **kwargs: t.Any) -> RedisDedupStore:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), **kwargs)

    def claim(self, task_id: str) -> Claim:
        key = self.prefix + task_id
        for _ in range(3):  # a claim may lapse between SET NX and GET: then try to take it again
            if self.redis.set(key, Claim.RUNNING.value, nx=True, px=self.running_ms):
                return Claim.NEW
            held = self.redis.get(key)
            if held is not None:
                return Claim(held.decode() if isinstance(held, bytes) else held)
        return Claim.RUNNING

    def finish(self, task_id: str) -> None:
        self.redis.set(self.prefix + task_id, Claim.DONE.value, px=self.done_ms)

    def release(self, task_id: str) -> None:
        self.redis.delete(self.prefix + task_id)


class MemoryDedupStore:
    """Claims in this process's memory (a dict with expiry): for tests and single-process receivers."""

    def __init__(self, running_ttl: float = RUNNING_TTL, done_ttl: float = DONE_TTL,
                 clock: t.Callable[[], float] = time.monotonic) -> None:
        self.running_ttl, self.done_ttl, self.clock = running_ttl, done_ttl, clock
        self._held: dict[str, tuple[Claim, float]] = {}
        self._lock = threading.Lock()
        self._claims = 0

    SWEEP_EVERY = 1000
    """Claims between two sweeps of lapsed entries (a sweep looks at every entry)."""

    def claim(self, task_id: str) -> Claim:
        now = self.clock()
        with self._lock:
            self._claims += 1
            if self._claims % self.SWEEP_EVERY == 0:
                self._expire(now)
            held = self._held.get(task_id)
            if held is not None and held[1] > now:
                return held[0]
            self._held[task_id] = (Claim.RUNNING, now + self.running_ttl)
            return Claim.NEW

    def finish(self, task_id: str) -> None:
        with self._lock:
            self._held[task_id] = (Claim.DONE, self.clock() + self.done_ttl)

    def release(self, task_id: str) -> None:
        with self._lock:
            self._held.pop(task_id, None)

    def _expire(self, now: float) -> None:
        for task_id in [k for k, (_, until) in self._held.items() if until <= now]:
            del self._held[task_id]
