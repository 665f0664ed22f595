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

What Flower (and ``celery events``) shows of a message: the Celery task
returns once its callbacks are handed to the launcher, before any was sent, so
Celery's own "task-started" and "task-succeeded" would call a message whose
callback then failed a SUCCESS (and Flower keeps SUCCESS against any later
FAILURE: ``celery.events.state`` lets a state of lower precedence only merge
fields). :class:`DeliveryRequest` drops those two; once ``record`` has stored
the outcomes, :class:`MessageEvents` sends the message's one final event from
the process that recorded them: "task-succeeded" whose result names each task
and outcome, or "task-failed" naming the tasks that failed for good. Celery's
"task-received" (name ``deliver <topic> xN``, the ids in ``args``) and its
"task-retried"/"task-failed" for a message that raised are kept, so a message
costs two task events instead of three.
"""
from __future__ import annotations

import collections
import datetime
import functools
import logging
import os
import sys
import threading
import time
import traceback
import typing as t

from celery import Celery, Task
from celery.events import EventDispatcher
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown
from celery.worker.request import Request

from httpqueue import context, events, metrics, nodes
from httpqueue.celery import app
from httpqueue.clock import now_ms
from httpqueue.context import DELIVERY_THREADS
from httpqueue.delivery import aio, http
from httpqueue.exceptions import CallbackFailed, StoreUnavailable, UnsafeCallbackError
from httpqueue.publish import DELIVER_TASK, NOTIFY_TASK, eta_seconds
from httpqueue.states import AdmitAction
from httpqueue.worker.attempts import MessageReport, Result, attempt_async, message_report, record, turned_away
from httpqueue.worker.launcher import Launcher

IN_FLIGHT = DELIVERY_THREADS
"""Most callbacks of one worker process on the wire at once (coroutines on its delivery loop): as many
as the 100 I/O threads allowed, so a slow receiver sees no more connections than before."""

MAX_PENDING = 4 * IN_FLIGHT
"""Most handed-off tasks per worker process; a delivery message beyond that waits for room.

Four rounds of callbacks in flight: even if every one of them takes the whole
callback timeout, the last task handed off starts well within its attempt
lease (timeout + lease), so a slow receiver does not get a task twice."""

_launcher: tuple[int, Launcher] | None = None
_launcher_lock = threading.Lock()


def _renew_launcher_lock() -> None:
    global _launcher_lock
    _launcher_lock = threading.Lock()  # a forked child never inherits it held


os.register_at_fork(after_in_child=_renew_launcher_lock)


def launcher() -> Launcher:
    """This process's launcher (built after a prefork child is forked: threads do not survive a fork)."""
    global _launcher
    current = _launcher
    if current is not None and current[0] == os.getpid():
        return current[1]
    with _launcher_lock:  # pool threads (the threads pool) must share one
        if _launcher is None or _launcher[0] != os.getpid():
            _launcher = (os.getpid(), Launcher(IN_FLIGHT, MAX_PENDING))
        return _launcher[1]


REPLACED_EVENTS = frozenset({"task-started", "task-succeeded"})
"""Celery's events of a delivery message that :class:`MessageEvents` replaces (or, "started", leaves out)."""


class DeliveryRequest(Request):  # type: ignore[misc]
    """The worker's request for a delivery message: Celery's task events minus started and succeeded.

    Both are sent in the worker's main process when the pool runs and returns
    the task, which is before any callback of the message was sent; the
    message's real end is sent by :class:`MessageEvents` (a "task-started" in
    between would cost a third event per message and say nothing true about
    the callbacks' timing). Received, retried, failed, rejected and revoked
    stay Celery's own.
    """

    def send_event(self, type: str, **fields: t.Any) -> None:  # noqa: A002 - Celery's signature
        if type not in REPLACED_EVENTS:
            super().send_event(type, **fields)


class DeliveryTask(Task):  # type: ignore[misc]
    """Base class of the delivery task: a message is retried whole only while the store is away."""

    autoretry_for = (StoreUnavailable,)
    max_retries = 8
    retry_backoff = True
    acks_late = True
    ignore_result = True
    Request = DeliveryRequest


EVENTS_FLUSH_AFTER = 0.05
"""Seconds a final message event may wait to share one broker publish with others (Flower is that late)."""

EVENTS_FLUSH_AT = 32
"""Final message events that are published at once, as one ``task.multi`` message, without waiting."""

EVENTS_MAX_WAITING = 10_000
"""Most events waiting for the publisher thread; beyond it new ones are dropped (and counted)."""

EVENTS_STUCK_AFTER = 30.0
"""Seconds one publish may take before the publisher thread is given up for a new one."""


class MessageEvents:
    """Sends the final task event of delivery messages from the process that recorded their outcomes.

    ``record`` runs on the launcher's recording threads of a pool process (a
    prefork child), where Celery has no event dispatcher. Those threads only
    append the event to a list: one publisher thread per process (started
    after the fork) owns the event dispatcher and its broker connection (a
    kombu channel is not thread-safe) and publishes what gathered, as one
    ``task.multi`` message (Celery's ``buffer_group``), :data:`EVENTS_FLUSH_AFTER`
    after the first event or at once when :data:`EVENTS_FLUSH_AT` are waiting:
    a publish of one event costs ~130 us of CPU and a batch ~6 us per event
    (measured on the test machine).

    Recording never waits for the broker. It used to publish under a lock of
    its own, and a publish that never returned then held every recording
    thread of the process: results stopped being stored while callbacks went
    on (seen once in a chaos soak). Now a publish that takes longer than
    :data:`EVENTS_STUCK_AFTER` is given up: its thread's stack is logged and a
    new publisher thread, with a new connection, takes over. Sending is best
    effort: a broker that refuses costs events (logged and counted), never a
    delivery. Sent only while ``worker_send_task_events`` is on, like Celery's
    own.
    """

    def __init__(self, celery_app: Celery) -> None:
        self.app = celery_app
        self.dropped = 0
        self._pid = 0
        self._fork_lock = threading.Lock()  # only ever taken briefly, never held across a fork or a publish
        self._waiting: collections.deque[tuple[str, str, dict[str, t.Any]]] = collections.deque()
        self._reset()

    def _reset(self) -> None:
        """A new publisher: its lock, wake-up, dispatcher and thread (a fresh process, or one given up)."""
        self._publishing = threading.Lock()
        self._wake = threading.Event()
        self._dispatcher: EventDispatcher | None = None
        self._flusher: threading.Thread | None = None
        self._busy_since = 0.0  # time.monotonic() when the publish under way started; 0.0 when none is
        self._generation = getattr(self, "_generation", 0) + 1

    def succeeded(self, message: Message, report: MessageReport) -> None:
        """The message's outcomes are stored and none failed for good: SUCCESS, its result the report."""
        self._send(message, "task-succeeded", result=report.text)

    def failed(self, message: Message, exception: str, result: str = "") -> None:
        """Some task of the message failed for good, or its outcomes could not be stored: FAILURE."""
        self._send(message, "task-failed", exception=exception, traceback="", **({"result": result} if result else {}))

    def finished(self, message: Message, report: MessageReport) -> None:
        """Send the report as a success or, if a task failed for good, as a failure (with the report as result)."""
        if report.failed:
            self.failed(message, report.failures, report.text)
        else:
            self.succeeded(message, report)

    def flush(self, timeout: float = 5.0) -> None:
        """Publish the waiting events now, from the calling thread (the worker process's shutdown)."""
        if self._pid == os.getpid() and self._publishing.acquire(timeout=timeout):
            try:
                self._publish_waiting(self._generation)
            finally:
                self._publishing.release()

    def _send(self, message: Message, type_: str, **fields: t.Any) -> None:
        if not message.id or not self.app.conf.worker_send_task_events:
            return
        fields.update(uuid=message.id, runtime=round(time.monotonic() - message.started, 6))
        if self._pid != os.getpid():  # a fresh process (fork): the parent's lock, connection and thread are not ours
            with self._fork_lock:
                if self._pid != os.getpid():
                    self._waiting.clear()
                    self._reset()
                    self._pid = os.getpid()
        if len(self._waiting) >= EVENTS_MAX_WAITING:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                events.emit("task_event_failed", logging.WARNING, event=type_,
                            error=f"{self.dropped} task events dropped: their publisher is behind or stuck")
        else:
            self._waiting.append((message.hostname, type_, fields))
        self._watch()
        self._wake.set()

    def _watch(self) -> None:
        """Start the publisher thread if there is none, or replace one stuck in a publish."""
        since = self._busy_since
        if self._flusher is not None and not (since and time.monotonic() - since > EVENTS_STUCK_AFTER):
            return
        with self._fork_lock:
            if self._flusher is not None and self._busy_since == since and since:
                stuck = self._flusher
                frame = sys._current_frames().get(stuck.ident or 0)
                events.emit("task_event_failed", logging.WARNING, event="publish",
                            error=f"publishing task events has hung for {time.monotonic() - since:.0f} s; a new "
                                  "publisher thread takes over",
                            stack="".join(traceback.format_stack(frame)) if frame is not None else "")
                self._reset()  # the stuck thread keeps its dispatcher and stops when it returns, if ever
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_soon, args=(self._generation,),
                                                 name="httpqueue-task-events", daemon=True)
                self._flusher.start()

    def _flush_soon(self, generation: int) -> None:
        wake = self._wake
        while generation == self._generation:
            wake.wait()
            if len(self._waiting) < EVENTS_FLUSH_AT:
                time.sleep(EVENTS_FLUSH_AFTER)
            wake.clear()  # an event that arrives from here on sets it again: the next round takes it
            with self._publishing:
                self._publish_waiting(generation)

    def _publish_waiting(self, generation: int) -> None:
        """Hand every waiting event to the dispatcher (it sends a batch each :data:`EVENTS_FLUSH_AT`), then flush."""
        self._busy_since = time.monotonic()
        try:
            while self._waiting and generation == self._generation:
                hostname, type_, fields = self._waiting.popleft()
                self._open(hostname).send(type_, **fields)
            if self._dispatcher is not None and generation == self._generation:
                self._dispatcher.flush(errors=False)
        except Exception as exc:  # noqa: BLE001 - monitoring must never break delivery
            if generation == self._generation:  # a publisher given up must not close its successor's connection
                self._broken("publish", exc)
        finally:
            if generation == self._generation:
                self._busy_since = 0.0

    def _open(self, hostname: str) -> EventDispatcher:
        if self._dispatcher is None or self._dispatcher.hostname != hostname:
            if self._dispatcher is not None:
                self._dispatcher.flush(errors=False)
            self._close()
            self._dispatcher = self.app.events.Dispatcher(
                self.app.connection_for_write(), hostname=hostname, buffer_while_offline=False,
                buffer_group=["task"], buffer_limit=EVENTS_FLUSH_AT)
        return self._dispatcher

    def _broken(self, what: str, exc: Exception) -> None:
        self._close()
        events.emit("task_event_failed", logging.WARNING, event=what, error=str(exc)[:300])

    def _close(self) -> None:
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            try:
                dispatcher.close()
                if dispatcher.connection is not None:
                    dispatcher.connection.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass


class Message(t.NamedTuple):
    """The delivery message an event is about: its Celery task id and worker, and when it was taken."""

    id: str
    hostname: str
    started: float


message_events = MessageEvents(app)


@app.task(bind=True, base=DeliveryTask, name=DELIVER_TASK)
def deliver(self: DeliveryTask, batch: list[list[t.Any]], topic: str = "") -> dict[str, int]:
    """Attempt the callbacks of ``batch`` (``[task_id, generation, offset_ms]``) that are still current.

    Claimed tasks pass their topic's admission (pause, limits, circuit
    breaker; see :mod:`httpqueue.store.topics`) before any callback is sent;
    those turned away go back to the timer without counting as an attempt.
    The message's final task event is sent once the outcomes are recorded.
    """
    started = time.monotonic()
    anchor = eta_anchor(self.request.eta, started)
    message = Message(self.request.id or "", self.request.hostname or "", started)
    ctx = context.current()
    offsets = {str(item[0]): (int(item[2]) if len(item) > 2 else 0) for item in batch}
    tasks = ctx.store.claim_many([(str(item[0]), int(item[1])) for item in batch], now_ms(),
                                 ctx.settings.attempt_lease_ms, owner=nodes.worker_incarnation())
    claimed = {task.id for task in tasks}
    stale = [task_id for task_id in offsets if task_id not in claimed]
    summary = {"stale": len(batch) - len(tasks)}
    if not tasks:
        message_events.finished(message, message_report(len(batch), [], [], stale))
        return summary
    # admitted for when the first attempt starts (the message may be due a lead before it): a rate
    # limiter's slot or a breaker's cooldown is judged at the start, not at the hand-off
    first_start_ms = round((anchor - time.monotonic()) * 1000) + min(offsets[task.id] for task in tasks)
    admission = ctx.topics.admit(topic, tasks, now_ms() + max(0, first_start_ms))
    go = [task for task, v in zip(tasks, admission.verdicts) if v.action is AdmitAction.GO]
    away = [turned_away(task, v) for task, v in zip(tasks, admission.verdicts) if v.action is not AdmitAction.GO]
    # Hand the attempts to the launcher: each starts at its offset from the message's ETA (or its
    # start, without one; offsets, not absolute due times, so a promoter on an injected clock still
    # works), on the process's delivery loop; the outcomes are recorded together when the last one ends.
    taken = round(time.time() * 1000 - (time.monotonic() - started) * 1000)
    calls = [(anchor + offsets[task.id] / 1000, functools.partial(attempt_async, ctx, task, taken)) for task in go]

    def done(results: list[Result]) -> None:
        outcomes = [*away, *results]
        try:
            recorded = record(ctx, topic, outcomes, _notify, admission.failure_callback)
        except Exception as exc:  # the launcher logs it; the leases re-issue the tasks
            message_events.failed(message, f"outcomes of {len(outcomes)} tasks not recorded ({exc}); the tasks "
                                           "are re-issued when their lease runs out")
            raise
        finally:
            metrics.IN_FLIGHT.dec(len(go))
        returned = {r.task.id for r in results}
        lost = [task.id for task in go if task.id not in returned]
        message_events.finished(message, message_report(len(batch), outcomes, recorded, stale, lost))

    metrics.IN_FLIGHT.inc(len(go))  # the worker's load figure in the node registry
    launcher().launch(calls, done)
    summary["launched"] = len(go)
    summary["turned_away"] = len(away)
    return summary


def eta_anchor(eta: str | datetime.datetime | None, started: float) -> float:
    """The ``time.monotonic()`` instant of a message's ETA, given when it started (``started``).

    The publisher makes a message due a little before its tasks
    (:data:`~httpqueue.publish.LEAD_MS`) and counts their offsets from its
    ETA: anchored there, an attempt starts when its task is due however long
    the worker's timer and the hand-off to this process took. A message
    without an ETA (due at once, or held by the broker) counts from its start.
    """
    when = eta_seconds(eta)
    return started if when is None else started - (time.time() - when)


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
        sent = aio.run(http.notify_async(aio.client(ctx.callback_policy), url, task, body,
                                         timeout=ctx.settings.callback_timeout, signer=ctx.signer))
    except UnsafeCallbackError as exc:  # the guard refuses the address: retrying cannot help
        events.emit("notify_failed", logging.WARNING, task_id=task.id, topic=task.topic, error=f"refused: {exc}")
        return "refused"
    ctx.store.mark_notified(task_id, now_ms())
    events.emit("failure_notified", task_id=task.id, topic=task.topic, code=sent.code,
                duration_ms=round(sent.duration * 1000, 3))
    return "sent"


def drain(timeout: float = 30.0) -> None:
    """Let launched attempts finish and be recorded (worker shutdown), if this process has any."""
    if _launcher is not None and _launcher[0] == os.getpid() and _launcher[1].drain(timeout):
        aio.close()  # idle keep-alive connections: receivers see them closed, not dropped
    message_events.flush()


@worker_process_init.connect
def _prepare(**_: t.Any) -> None:
    """A new pool process starts its launcher and opens its callback session before its first message."""
    try:
        launcher()
        aio.prepare(context.current().callback_policy)
    except Exception:  # noqa: BLE001 - done lazily at the first message instead
        logging.getLogger("httpqueue").exception("preparing the delivery loop failed")


@worker_process_shutdown.connect
@worker_shutdown.connect
def _drain(**_: t.Any) -> None:
    """Let handed-off attempts finish and be recorded before the process exits."""
    drain()
