"""Which tasks a worker holds as delivery messages not yet due, noted in the store.

With the Redis broker, Celery hands a worker its ETA messages as soon as they
are published and the worker keeps them in memory, unacknowledged, until they
are due (the promoter publishes up to ``timer_horizon`` ahead). If that worker
is killed, or stops, kombu gives those messages back only after its
``visibility_timeout`` (an hour); the store's lease would bring the tasks back
30 s after their due time. Noted here, they are handed out again as soon as
the node registry sees the worker gone (``orphans.lua``, by another worker's
promoter), or at once when the worker stops cleanly, and fire on time.

The note is written off the consumer's path: Celery's ``task_received``
signal (the worker's main process, for every message it takes) only appends
to a list and wakes a thread of its own, which writes what gathered
:data:`NOTE_AFTER` later, one script call per shard. A worker killed within
that time and a round trip of taking a message has not noted it yet: that
task still waits for its lease. (Noted once per promoter pass instead, 0.25 s,
a chaos soak saw about 4 such tasks per worker kill.)
With RabbitMQ nothing is noted: the broker gives a closed connection's
unacknowledged messages to another consumer at once.
"""
from __future__ import annotations

import logging
import threading
import time
import typing as t

from httpqueue import events
from httpqueue.publish import DELIVER_TASK, eta_seconds
from httpqueue.store.tasks import TaskStore

MIN_AHEAD_MS = 500
"""Messages due sooner than this when taken are not noted: the worker starts them before the next note."""

NOTE_AFTER = 0.02
"""Seconds the note thread waits after a message arrives, so that messages arriving together share one write."""

MAX_UNWRITTEN = 200_000
"""Most notes kept while the store is away; beyond it the oldest are dropped (their tasks keep their lease)."""


class Holds:
    """Collects the tasks of delivery messages this worker takes ahead of their due time; writes them on demand."""

    def __init__(self, store: TaskStore, incarnation: str, *, clock: t.Callable[[], float] = time.time) -> None:
        self.store = store
        self.incarnation = incarnation
        self.clock = clock
        self._lock = threading.Lock()
        self._unwritten: list[tuple[str, int, int]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Holds:
        """Start the thread that writes the notes (the worker's main process, once its promoter starts)."""
        self._thread = threading.Thread(target=self._run, name="httpqueue-holds", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            time.sleep(NOTE_AFTER)
            try:
                self.write(int(self.clock() * 1000))
                failures = 0
            except Exception as exc:  # noqa: BLE001 - Redis away: kept for the next write
                failures += 1
                events.emit("holds_error", logging.WARNING, error=str(exc)[:300])
                self._stop.wait(min(5.0, 0.1 * 2 ** failures))
                self._wake.set()

    def received(self, sender: t.Any = None, request: t.Any = None, **_: t.Any) -> None:
        """Celery's ``task_received``: note the tasks of a delivery message due later than :data:`MIN_AHEAD_MS`."""
        if request is None or request.type != DELIVER_TASK:  # its `name` is the shadow name ("deliver <topic> xN")
            return
        eta = eta_seconds(request.eta)
        if eta is None:
            return
        eta_ms = int(eta * 1000)
        if eta_ms - self.clock() * 1000 < MIN_AHEAD_MS:
            return
        try:
            batch = request.args[0]
            items = [(str(item[0]), int(item[1]), eta_ms + (int(item[2]) if len(item) > 2 else 0)) for item in batch]
        except (IndexError, TypeError, ValueError):  # not our message's shape: the task itself will say so
            return
        with self._lock:
            self._unwritten += items
        self._wake.set()

    def write(self, now_ms: int) -> int:
        """Write the notes taken since the last call (the note thread); returns how many.

        If the store is away the notes are kept for the next call (at most
        :data:`MAX_UNWRITTEN`) and the error is raised for the promoter's backoff.
        """
        with self._lock:
            items, self._unwritten = self._unwritten, []
        if not items:
            return 0
        try:
            return self.store.hold_many(self.incarnation, items, now_ms)
        except Exception:
            with self._lock:
                self._unwritten = (items + self._unwritten)[-MAX_UNWRITTEN:]
            raise

    def release(self, now_ms: int) -> int:
        """The worker stops cleanly: hand out again the tasks it holds as messages (not its attempts)."""
        self.stop()
        self.write(now_ms)  # notes taken since the last pass: their messages are held too
        released = self.store.release_orphans(self.incarnation, now_ms, attempts=False)
        if released:
            events.emit("held_released", logging.INFO, incarnation=self.incarnation, released=released)
        return released
