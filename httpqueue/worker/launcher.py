"""Running a delivery message's callbacks off the Celery pool, each at its own time.

A delivery message carries up to :data:`~httpqueue.publish.MAX_BATCH` tasks
due within :data:`~httpqueue.publish.BATCH_WINDOW_MS` of each other. The pool
process (or thread) that received it only claims and admits them; the
:class:`Launcher` then starts each attempt at its offset from the message's
start on the process's delivery loop (one asyncio event loop thread running
aiohttp, :mod:`httpqueue.delivery.aio`), and once the last attempt ends hands
the message's results to a recording thread, which stores them in one round
trip (the loop itself never waits on Redis).

So a slow or hanging receiver holds one of many coroutines, never a pool
process, and other topics keep their timing. At most ``in_flight`` callbacks
of a process are on the wire at once (an attempt beyond that waits for a
place, and its deadline starts when it has one), as the 100 I/O threads
allowed before. Back pressure: a process holds at most ``max_pending`` tasks
handed off and not yet recorded; a message beyond that waits in its pool
process, which stops Celery from prefetching more. Tasks handed off are
leased in the store, so if the process dies they are re-issued when the
lease runs out, as for any other crash.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import sys
import threading
import time
import traceback
import typing as t
from concurrent.futures import ThreadPoolExecutor

from httpqueue.delivery import aio

LOGGER = logging.getLogger("httpqueue")

T = t.TypeVar("T")

Call = t.Callable[[], t.Awaitable[T]]
"""One attempt: a coroutine function of no arguments, run on the delivery loop."""


RECORDING_STUCK_AFTER = 60.0
"""Seconds after which a recording still running is logged with its stack (it should take milliseconds)."""

WATCH_EVERY = 10.0
"""Seconds between two looks for recordings that run too long."""


class Slots:
    """A counting semaphore taken and given back several units at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.cond = threading.Condition()

    def acquire_many(self, n: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.free >= min(n, self.size))
            self.free -= n

    def release_many(self, n: int) -> None:
        with self.cond:
            self.free += n
            self.cond.notify_all()


class _Gather(t.Generic[T]):
    """Collects the results of ``n`` calls on the loop; the last one hands ``done(results)`` to a thread."""

    __slots__ = ("remaining", "results", "finish")

    def __init__(self, n: int, finish: t.Callable[[list[T]], None]) -> None:
        self.remaining = n
        self.results: list[T] = []
        self.finish = finish


class Launcher:
    """Starts calls at given monotonic times on the process's delivery loop, and gathers their results."""

    def __init__(self, in_flight: int, max_pending: int, recorders: int = 4) -> None:
        self.loop = aio.loop()
        self.slots = Slots(max_pending)
        self.in_flight = in_flight
        self._active = 0  # runners on the loop; each runs one call at a time (loop thread only)
        self._waiting: collections.deque[tuple[Call[t.Any], _Gather[t.Any]]] = collections.deque()
        self._running: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones
        self.recorder = ThreadPoolExecutor(max_workers=recorders, thread_name_prefix="httpqueue-record")
        self._recording: dict[int, float] = {}  # recording thread ident -> time.monotonic() its recording began
        self._reported: set[tuple[int, float]] = set()
        self.loop.call_soon_threadsafe(self._watch_recording)

    def launch(self, calls: t.Sequence[tuple[float, Call[T]]], done: t.Callable[[list[T]], None]) -> None:
        """Run each ``call`` at its monotonic time; then ``done(results)`` once, on a recording thread.

        Blocks while this process already has too many calls handed off. An
        attempt that raised has no result (its task's lease brings it back).
        """
        if not calls:
            done([])
            return
        n = len(calls)
        self.slots.acquire_many(n)

        def finish(results: list[T]) -> None:
            me = threading.get_ident()
            self._recording[me] = time.monotonic()
            try:
                done(results)
            except Exception:  # the store's leases recover whatever was not recorded
                LOGGER.exception("recording %d delivery results failed", len(results))
            finally:
                self._recording.pop(me, None)
                self.slots.release_many(n)

        gather: _Gather[T] = _Gather(n, finish)
        self.loop.call_soon_threadsafe(self._schedule, calls, gather)

    def _schedule(self, calls: t.Sequence[tuple[float, Call[T]]], gather: _Gather[T]) -> None:
        """On the loop: each call at its time (the loop's clock is ``time.monotonic``)."""
        loop = self.loop
        now = loop.time()
        for when, call in calls:
            if when <= now:
                self._start(call, gather)
            else:
                loop.call_at(when, self._start, call, gather)

    def _start(self, call: Call[T], gather: _Gather[T]) -> None:
        """A call is due: run it now if a place is free, else as soon as a runner is done (in due order)."""
        if self._active >= self.in_flight:
            self._waiting.append((call, gather))
            return
        self._active += 1
        task = self.loop.create_task(self._runner(call, gather))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _runner(self, call: Call[t.Any], gather: _Gather[t.Any]) -> None:
        """Run calls one after the other: this one, then waiting ones while there are any."""
        try:
            while True:
                result = None
                try:
                    result = await call()
                except Exception:  # an attempt that raised is recorded by nobody: its lease brings it back
                    LOGGER.exception("a delivery attempt raised")
                if result is not None:
                    gather.results.append(result)
                gather.remaining -= 1
                if gather.remaining == 0:
                    self.recorder.submit(gather.finish, gather.results)
                if not self._waiting:
                    return
                call, gather = self._waiting.popleft()
        finally:
            self._active -= 1

    def _watch_recording(self) -> None:
        """On the loop, every :data:`WATCH_EVERY` s: log (once) the stack of a recording that has run too long.

        A recording is one round trip to Redis with a socket timeout; one that
        runs for :data:`RECORDING_STUCK_AFTER` s is blocked on something else,
        and its stack says what (the results of that process are not stored
        meanwhile: their tasks come back when their lease runs out).
        """
        now = time.monotonic()
        frames = None
        for ident, began in list(self._recording.items()):
            if now - began > RECORDING_STUCK_AFTER and (ident, began) not in self._reported:
                self._reported.add((ident, began))
                frames = frames if frames is not None else sys._current_frames()
                frame = frames.get(ident)
                LOGGER.error("recording delivery results has been blocked for %.0f s in:\n%s", now - began,
                             "".join(traceback.format_stack(frame)) if frame is not None else "(thread gone)")
        if len(self._reported) > 1000:
            self._reported.clear()
        self.loop.call_later(WATCH_EVERY, self._watch_recording)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait up to ``timeout`` until every call handed off has run (at its time) and been recorded."""
        with self.slots.cond:
            return self.slots.cond.wait_for(lambda: self.slots.free == self.slots.size, timeout)
