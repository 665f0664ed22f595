"""The worker's Celery tasks: ``deliver`` (a message's callbacks) and ``notify_failure``.

The Celery app (:mod:`httpqueue.celery`) names this module with ``include=``,
so a worker imports it at start; nothing imports it for wiring. A message says
"deliver these tasks (id, generation, offset), all of one topic and due
together" (see :mod:`httpqueue.publish`); the store decides for each whether it
still should (``claim``), the topic whether it may go now (``admit``), and the
callbacks of one message are sent concurrently by the launcher, so a slow
receiver does not delay its neighbours.

Celery's ``autoretry_for`` covers what is retried as a whole message: the
store being briefly unreachable before any callback was sent. A failed
*callback* is not a Celery retry: its next attempt is parked in the store's
timer (see :mod:`httpqueue.worker.attempts`).
"""
from __future__ import annotations

import functools
import logging
import os
import time
import typing as t

from celery import Task
from celery.signals import worker_process_shutdown, worker_shutdown

from httpqueue import context, events, metrics  # noqa: F401  (metrics: counts this process's events)
from httpqueue.celery import app
from httpqueue.clock import now_ms
from httpqueue.context import DELIVERY_THREADS
from httpqueue.delivery import http
from httpqueue.exceptions import CallbackFailed, StoreUnavailable, UnsafeCallbackError
from httpqueue.publish import DELIVER_TASK, NOTIFY_TASK
from httpqueue.states import AdmitAction
from httpqueue.worker.attempts import Result, attempt, record, turned_away
from httpqueue.worker.launcher import Launcher

MAX_PENDING = 4 * DELIVERY_THREADS
"""Most handed-off tasks per worker process; a delivery message beyond that waits for room."""

_launcher: tuple[int, Launcher] | None = None


def launcher() -> Launcher:
    """This process's launcher (built after a prefork child is forked: threads do not survive a fork)."""
    global _launcher
    if _launcher is None or _launcher[0] != os.getpid():
        _launcher = (os.getpid(), Launcher(DELIVERY_THREADS, MAX_PENDING))
    return _launcher[1]


class DeliveryTask(Task):  # type: ignore[misc]
    """Base class of the delivery task: a message is retried whole only while the store is away."""

    autoretry_for = (StoreUnavailable,)
    max_retries = 8
    retry_backoff = True
    acks_late = True
    ignore_result = True


@app.task(bind=True, base=DeliveryTask, name=DELIVER_TASK)
def deliver(self: DeliveryTask, batch: list[list[t.Any]], topic: str = "") -> dict[str, int]:
    """Attempt the callbacks of ``batch`` (``[task_id, generation, offset_ms]``) that are still current.

    Claimed tasks pass their topic's admission (pause, limits, circuit
    breaker; see :mod:`httpqueue.store.topics`) before any callback is sent;
    those turned away go back to the timer without counting as an attempt.
    """
    started = time.monotonic()
    ctx = context.current()
    offsets = {str(item[0]): (int(item[2]) if len(item) > 2 else 0) for item in batch}
    tasks = ctx.store.claim_many([(str(item[0]), int(item[1])) for item in batch], now_ms(),
                                 ctx.settings.attempt_lease_ms)
    summary = {"stale": len(batch) - len(tasks)}
    if not tasks:
        return summary
    admission = ctx.topics.admit(topic, tasks, now_ms())
    go = [task for task, v in zip(tasks, admission.verdicts) if v.action is AdmitAction.GO]
    away = [turned_away(task, v) for task, v in zip(tasks, admission.verdicts) if v.action is not AdmitAction.GO]
    # Hand the attempts to the launcher: each starts at its offset from this message's start
    # (offsets, not absolute due times, so a promoter on an injected clock still works), on
    # I/O threads; the outcomes are recorded together when the last one ends.
    calls = [(started + offsets[task.id] / 1000, functools.partial(attempt, ctx, task)) for task in go]

    def done(results: list[Result]) -> None:
        record(ctx, topic, [*away, *results], _notify, admission.failure_callback)

    launcher().launch(calls, done)
    summary["launched"] = len(go)
    summary["turned_away"] = len(away)
    return summary


def _notify(task_id: str, url: str) -> None:
    """Ask for a failure notification; if the broker refuses, only the notice is lost (the failure is stored)."""
    try:
        notify_failure.apply_async(args=(task_id, url))
    except Exception as exc:
        events.emit("notify_failed", logging.WARNING, task_id=task_id, error=str(exc)[:300])


@app.task(bind=True, name=NOTIFY_TASK, autoretry_for=(CallbackFailed, StoreUnavailable), retry_backoff=True,
          retry_backoff_max=600, max_retries=8, acks_late=True, ignore_result=True)
def notify_failure(self: Task, task_id: str, url: str) -> str:
    """POST a failed task's final state once to its failure-callback URL (any 2xx answer counts).

    A plain Celery task with ``autoretry_for``: a receiver that is down gets
    the notice later, with Celery's exponential backoff. The task's ``fnd``
    field records that it was sent, so a redelivered message sends nothing.
    """
    ctx = context.current()
    task = ctx.store.get(task_id)
    if not ctx.store.mark_notified(task_id, now_ms(), check_only=True):
        return "already sent"
    body = {"id": task.id, "topic": task.topic, "content": task.content, "state": task.state.value,
            "attempts": task.attempts, "last_error": task.last_error, "last_code": task.last_code,
            "finished_time_ms": task.finished_ms}
    try:
        sent = http.notify(ctx.http, url, task, body, timeout=ctx.settings.callback_timeout, signer=ctx.signer)
    except UnsafeCallbackError as exc:  # the guard refuses the address: retrying cannot help
        events.emit("notify_failed", logging.WARNING, task_id=task.id, topic=task.topic, error=f"refused: {exc}")
        return "refused"
    ctx.store.mark_notified(task_id, now_ms())
    events.emit("failure_notified", task_id=task.id, topic=task.topic, code=sent.code,
                duration_ms=round(sent.duration * 1000, 3))
    return "sent"


def drain(timeout: float = 30.0) -> None:
    """Let launched attempts finish and be recorded (worker shutdown), if this process has any."""
    if _launcher is not None and _launcher[0] == os.getpid():
        _launcher[1].drain(timeout)


@worker_process_shutdown.connect
@worker_shutdown.connect
def _drain(**_: t.Any) -> None:
    """Let handed-off attempts finish and be recorded before the process exits."""
    drain()
