"""Background loops of the worker: one place for how they repeat, back off and start with Celery.

The promoter and the schedule ticker both run a pass again and again in a
thread of the worker's main process. They share what matters for robustness:
Redis or the broker being away is a warning and an exponential backoff (never
a dead thread), a bug is logged with its traceback and retried, and the thread
lives exactly as long as the Celery worker (a bootstep).
"""
from __future__ import annotations

import logging
import threading
import typing as t

import redis
from celery import bootsteps
from kombu.exceptions import OperationalError

from httpqueue import events, logs
from httpqueue.exceptions import HttpqueueError

OUTAGE_ERRORS = (HttpqueueError, redis.RedisError, OperationalError, OSError, ConnectionError)
"""What a pass raises when Redis or the broker is away: retried after a backoff, logged as a warning."""

MAX_BACKOFF = 5.0
"""Longest wait, in seconds, between two passes that failed in a row."""


def repeat(one_pass: t.Callable[[], bool], stop: threading.Event, interval: float, name: str,
           **fields: t.Any) -> None:
    """Run ``one_pass`` until ``stop`` is set; it returns True when more work is waiting right now.

    After a pass with nothing left it waits ``interval``; after failures it
    waits ``interval * 2**failures`` (at most :data:`MAX_BACKOFF`) and emits
    ``<name>_error`` with ``fields``.
    """
    failures = 0
    while not stop.is_set():
        try:
            busy = one_pass()
            failures = 0
        except OUTAGE_ERRORS as exc:
            failures += 1
            events.emit(f"{name}_error", logging.WARNING, error=str(exc)[:300], **fields)
            stop.wait(min(MAX_BACKOFF, interval * 2 ** failures))
            continue
        except Exception:  # a bug must not silently stop this worker's loop
            logs.LOGGER.exception("%s pass failed", name)
            stop.wait(interval)
            continue
        if not busy:
            stop.wait(interval)


class ThreadStep(bootsteps.StartStopStep):
    """A Celery worker bootstep that runs one background loop in a daemon thread for the worker's lifetime.

    Subclasses give ``label`` and :meth:`loop`, which builds what the loop needs
    from the worker and returns the function the thread runs with the stop event.
    """

    def __init__(self, worker: t.Any, **kwargs: t.Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()

    def loop(self, worker: t.Any) -> t.Callable[[threading.Event], None]:
        raise NotImplementedError

    def start(self, worker: t.Any) -> None:
        run = self.loop(worker)
        self.stop_event.clear()
        self.thread = threading.Thread(target=run, args=(self.stop_event,), name=self.label, daemon=True)
        self.thread.start()

    def stop(self, worker: t.Any) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    shutdown = stop
