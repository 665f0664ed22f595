"""Running a delivery message's callbacks off the Celery pool, each at its own time.

A delivery message carries up to 32 tasks due within 100 ms of each other
(see :mod:`httpqueue.publish`). The pool process (or thread) that received it
only claims and admits them; the :class:`Launcher` then starts each attempt
at its offset from the message's start, on a thread pool sized for I/O, and
records the message's outcomes in one round trip once the last attempt ends.

So a slow or hanging receiver holds one of many I/O threads, never a pool
process, and other topics keep their timing. Back pressure: a process holds at
most ``max_pending`` tasks handed off and not yet recorded; a message beyond
that waits in its pool process, which stops Celery from prefetching more.
Tasks handed off are leased in the store, so if the process dies they are
re-issued when the lease runs out, as for any other crash.
"""
from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor

LOGGER = logging.getLogger("httpqueue")

T = t.TypeVar("T")


class Slots:
    """A counting semaphore taken and given back several units at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.cond = threading.Condition()

    def acquire_many(self, n: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.free >= n)
            self.free -= n

    def release_many(self, n: int) -> None:
        with self.cond:
            self.free += n
            self.cond.notify_all()


class _Gather(t.Generic[T]):
    """Collects the results of ``n`` calls; the last one to arrive runs ``done(results)``."""

    def __init__(self, n: int, done: t.Callable[[list[T]], None]) -> None:
        self.remaining = n
        self.results: list[T] = []
        self.lock = threading.Lock()
        self.done = done

    def add(self, result: T | None) -> None:
        with self.lock:
            if result is not None:
                self.results.append(result)
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self.done(self.results)


class Launcher:
    """Starts calls at given monotonic times on an I/O thread pool, and gathers their results."""

    def __init__(self, threads: int, max_pending: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="httpqueue-callback")
        self.slots = Slots(max_pending)
        self._heap: list[tuple[float, int, t.Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._timer = threading.Thread(target=self._run_timer, name="httpqueue-due", daemon=True)
        self._timer.start()

    def launch(self, calls: t.Sequence[tuple[float, t.Callable[[], T]]], done: t.Callable[[list[T]], None]) -> None:
        """Run each ``call`` at its monotonic time; then ``done(results)`` once, with every result.

        Blocks while this process already has too many calls in flight.
        """
        if not calls:
            done([])
            return
        self.slots.acquire_many(len(calls))

        def finish(results: list[T]) -> None:
            try:
                done(results)
            except Exception:  # the store's leases recover whatever was not recorded
                LOGGER.exception("recording %d delivery results failed", len(results))
            finally:
                self.slots.release_many(len(calls))

        gather: _Gather[T] = _Gather(len(calls), finish)
        for when, call in calls:
            self._at(when, functools.partial(self.executor.submit, self._guarded, call, gather))

    @staticmethod
    def _guarded(call: t.Callable[[], T], gather: _Gather[T]) -> None:
        result = None
        try:
            result = call()
        except Exception:  # an attempt that raised is recorded by nobody: its lease brings it back
            LOGGER.exception("a delivery attempt raised")
        gather.add(result)

    def _at(self, when: float, action: t.Callable[[], t.Any]) -> None:
        if when <= time.monotonic():
            action()
            return
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), action))
            self._cond.notify()

    def _run_timer(self) -> None:
        while True:
            with self._cond:
                while not (self._heap and self._heap[0][0] <= time.monotonic()):
                    if self._stopping and not self._heap:
                        return
                    self._cond.wait(max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else None)
                _, _, action = heapq.heappop(self._heap)
            action()

    def drain(self, timeout: float = 30.0) -> None:
        """Start what is scheduled (at its time), then wait up to ``timeout`` until all is recorded."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._timer.join(max(0.0, deadline - time.monotonic()))
        with self.slots.cond:
            self.slots.cond.wait_for(lambda: self.slots.free == self.slots.size,
                                     max(0.0, deadline - time.monotonic()))
