"""The Celery delivery task, and publishing its messages.

A message says "deliver these tasks (id, generation), all of one topic and due
together"; the store decides for each whether it still should (``claim``). One
message carries up to :data:`MAX_BATCH` tasks because Celery's per-message cost
(publish, receive, three task events, ack) dwarfs an HTTP POST on loopback:
batching is what lets a worker outrun plain Celery (see docs/benchmarks.rst).
The callbacks of one message are sent concurrently, so a slow receiver does not
delay its neighbours.

A failed attempt is retried after Celery's own exponential backoff
(``celery.utils.time.get_exponential_backoff_interval`` with the task's
``retry_backoff``/``retry_backoff_max``/``retry_jitter``, set from httpqueue's
settings). The retry is *parked* in the store's timer rather than published as
a long ETA message, so a backoff of days costs no worker memory and is never
redelivered by kombu's ``visibility_timeout``. Celery's ``autoretry_for``
covers what is retried as a whole message: the store being briefly unreachable
before any callback was sent.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import random
import time
import typing as t

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from httpqueue import context, delivery, events
from httpqueue.context import now_ms
from httpqueue.exceptions import CallbackFailed, CallbackThrottled, StoreUnavailable, UnsafeCallbackError
from httpqueue.store import Dispatch, ScriptCalls, Settlement, TaskRecord
from httpqueue.topics import Verdict, host_of

TASK_NAME = "httpqueue.deliver"

MAX_BATCH = 32
"""Most tasks one delivery message carries."""

BATCH_WINDOW_MS = 100
"""Tasks of one topic due within this many ms of each other share a message.

The message is due at the earliest of them; the worker then starts each
attempt at its own offset, so batching costs no precision: each callback
still starts within milliseconds of its due time."""

PUBLISH_BATCH = 512
"""Broker commands pipelined per round trip when publishing many messages (kombu's Producer.batch)."""


class DeliveryTask(Task):  # type: ignore[misc]
    """Base class of the delivery task: httpqueue's retry policy on Celery's backoff formula."""

    autoretry_for = (StoreUnavailable,)
    max_retries = 8
    acks_late = True
    ignore_result = True

    # Callback backoff, read from the settings when used (after the CLI applied its options).
    @property
    def retry_backoff(self) -> int:
        return int(context.current().settings.retry_base)

    @property
    def retry_backoff_max(self) -> int:
        return int(context.current().settings.retry_backoff_max)

    @property
    def retry_jitter(self) -> bool:
        return bool(context.current().settings.retry_jitter)

    def backoff_ms(self, retries: int) -> int:
        """Wait before retry number ``retries + 1``: base x 2^retries seconds (Celery's formula)."""
        return 1000 * get_exponential_backoff_interval(
            factor=self.retry_backoff, retries=retries, maximum=self.retry_backoff_max,
            full_jitter=self.retry_jitter)


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of one callback attempt."""

    task: TaskRecord
    outcome: str  # succeeded | retrying | throttled | failed, or not attempted: deferred | held
    started_ms: int
    finished_ms: int
    due_ms: int = 0
    code: int | None = None
    error: str | None = None
    duration: float = 0.0
    slot_ms: int | None = None


from httpqueue.celeryapp import app  # noqa: E402  (circular: the app imports this module)


@app.task(bind=True, base=DeliveryTask, name=TASK_NAME)
def deliver(self: DeliveryTask, batch: list[list[t.Any]], topic: str = "") -> dict[str, int]:
    """Attempt the callbacks of ``batch`` (``[task_id, generation, offset_ms]``) that are still current.

    Claimed tasks pass their topic's admission (pause, limits, circuit
    breaker; see :mod:`httpqueue.topics`) before any callback is sent; those
    turned away go back to the timer without counting as an attempt.
    """
    started = time.monotonic()
    ctx = context.current()
    s = ctx.settings
    lease_ms = int((s.callback_timeout + s.lease) * 1000)
    offsets = {str(item[0]): (int(item[2]) if len(item) > 2 else 0) for item in batch}
    tasks = ctx.store.claim_many([(str(item[0]), int(item[1])) for item in batch], now_ms(), lease_ms)
    summary = {"stale": len(batch) - len(tasks)}
    if not tasks:
        return summary
    admission = ctx.topics.admit(topic, tasks, now_ms())
    go = [task for task, v in zip(tasks, admission.verdicts) if v.action == "go"]
    turned_away = [_turned_away(task, v) for task, v in zip(tasks, admission.verdicts) if v.action != "go"]
    # Hand the attempts to the launcher: each starts at its offset from this message's start
    # (offsets, not absolute due times, so a promoter on an injected clock still works), on
    # I/O threads; the outcomes are recorded together when the last one ends.
    calls = [(started + offsets[task.id] / 1000, functools.partial(attempt, self, ctx, task)) for task in go]
    ctx.launcher.launch(calls, lambda results: record(ctx, topic, [*turned_away, *results],
                                                      admission.failure_callback))
    summary["launched"] = len(go)
    summary["turned_away"] = len(turned_away)
    return summary


def drain(timeout: float = 30.0) -> None:
    """Let launched attempts finish and be recorded (worker shutdown), if this process has any."""
    ctx = context.current() if context.installed() else None
    if ctx is not None and "launcher" in vars(ctx):
        ctx.launcher.drain(timeout)


def _turned_away(task: TaskRecord, verdict: Verdict) -> Result:
    """A task its topic did not admit: held while paused, or deferred to ``until_ms``."""
    now = now_ms()
    if verdict.action == "held":
        return Result(task, "held", now, now, error="topic paused")
    return Result(task, "deferred", now, now, verdict.until_ms, error=DEFER_REASONS[verdict.action],
                  slot_ms=verdict.until_ms if verdict.action == "slot" else None)


DEFER_REASONS = {"slot": "rate limit", "open": "circuit open", "wait": "concurrency limit"}


def attempt(task_cls: DeliveryTask, ctx: context.Context, task: TaskRecord) -> Result:
    """POST one callback and decide what happens next; never raises for a receiver's fault."""
    s = ctx.settings
    started = now_ms()
    try:
        sent = delivery.send(ctx.http, task, task.attempts, timeout=s.callback_timeout,
                             follow_redirects=s.follow_redirects, signer=ctx.signer)
    except UnsafeCallbackError as exc:
        return Result(task, "failed", started, now_ms(), error=f"refused: {exc}")
    except CallbackThrottled as exc:
        if task.throttles < s.throttle_limit:
            finished = now_ms()
            return Result(task, "throttled", started, finished, finished + throttle_wait_ms(exc, task, s),
                          exc.code, str(exc), exc.duration)
        return failed_or_retry(task_cls, task, started, CallbackFailed(
            f"receiver answered code 101 {task.throttles + 1} times (limit {s.throttle_limit})",
            code=101, duration=exc.duration))
    except CallbackFailed as exc:
        return failed_or_retry(task_cls, task, started, exc)
    return Result(task, "succeeded", started, now_ms(), code=sent.code, duration=sent.duration)


def failed_or_retry(task_cls: DeliveryTask, task: TaskRecord, started: int, exc: CallbackFailed) -> Result:
    """A failed attempt: park the next one after the backoff, or fail for good when retries are spent.

    A task's own ``retry_policy`` replaces the settings' backoff, and its
    ``max_duration`` fails the task once the next attempt would start later
    than that after the first due time.
    """
    finished = now_ms()
    policy = (task.options or {}).get("retry_policy")
    if task.has_retry < task.max_retry:
        wait = (policy_backoff_ms(policy, task.has_retry, task_cls.retry_backoff, task_cls.retry_backoff_max,
                                  task_cls.retry_jitter) if policy else task_cls.backoff_ms(task.has_retry))
        limit = (policy or {}).get("max_duration")
        if limit is None or finished + wait - task.execute_ms <= limit * 1000:
            return Result(task, "retrying", started, finished, finished + wait, exc.code, str(exc), exc.duration)
        exc = CallbackFailed(f"{exc} (retry_policy.max_duration of {limit:g}s reached)", exc.code, exc.duration)
    return Result(task, "failed", started, finished, 0, exc.code, str(exc), exc.duration)


def policy_backoff_ms(policy: t.Mapping[str, t.Any], retries: int, base: float = 1.0,
                      maximum: float = 30 * 86_400, jitter: bool = False) -> int:
    """Wait before retry ``retries + 1`` under a task's policy: base x factor^n, capped, maybe jittered (pure).

    Celery's formula generalised with a factor; what the policy leaves out
    comes from the settings (passed in as ``base``, ``maximum``, ``jitter``).
    """
    wait = min(float(policy.get("base", base)) * float(policy.get("factor", 2)) ** retries,
               float(policy.get("max_interval", maximum)))
    if policy.get("jitter", jitter):
        wait = random.uniform(0, wait)
    return int(wait * 1000)


def throttle_wait_ms(exc: CallbackThrottled, task: TaskRecord, s: t.Any) -> int:
    """Wait after code 101: the receiver's Retry-After, else base x 2^n; never above the cap."""
    wanted = exc.retry_after if exc.retry_after is not None else s.retry_base * 2 ** task.throttles
    return int(min(wanted, s.throttle_delay_max) * 1000)


ATTEMPTED = ("succeeded", "retrying", "throttled", "failed")


def record(ctx: context.Context, topic: str, results: t.Sequence[Result],
           failure_callback: str | None = None) -> None:
    """Store every outcome with its history event, and the topic's bookkeeping, in one round trip.

    Then emit one event per attempt (and one per message for tasks turned
    away), and ask for the failure notification of tasks that failed for good.
    """
    if not results:
        return
    now = now_ms()
    settlements = [Settlement(r.task.id, r.task.gen, r.finished_ms, r.outcome, r.due_ms, r.code, r.error,
                              _history_event(r), r.slot_ms) for r in results]
    outcomes = [(r.task.id, host_of(r.task.callback), _breaker_result(r)) for r in results
                if r.outcome in ATTEMPTED]
    batch: list[ScriptCalls] = []

    def also(calls: ScriptCalls) -> None:
        batch.append(calls)
        if outcomes:
            ctx.topics.finish(topic, outcomes, now, calls=calls)
        attempted = [(r.outcome, r.started_ms - r.task.due_ms) for r in results if r.outcome in ATTEMPTED]
        ctx.series.add(calls, ctx.keys.shard_of(results[0].task.id), attempted, now)

    recorded = ctx.store.settle_many(settlements, also=also)
    opened = batch[0].results[len(settlements):len(settlements) + 1] if batch and outcomes else []
    for host, until in zip(opened[0][::2], opened[0][1::2]) if opened else ():
        events.emit("circuit_open", logging.WARNING, topic=topic, host=host, until_ms=int(until))
    for result, ok in zip(results, recorded):
        if result.outcome not in ATTEMPTED:
            continue
        quiet = result.outcome in ("succeeded", "throttled")
        events.emit("attempt", logging.INFO if quiet else logging.WARNING,
                    task_id=result.task.id, topic=result.task.topic, attempt=result.task.attempts,
                    outcome=result.outcome, answer=f'{{"code":{result.code}}}' if quiet else None,
                    error=result.error, code=result.code, duration_ms=round(result.duration * 1000, 3),
                    late_ms=result.started_ms - result.task.due_ms, next_attempt_ms=result.due_ms or None,
                    recorded=ok)
        if ok and result.outcome == "failed":
            _notify_failure(result.task, failure_callback)
    turned_away = [r for r in results if r.outcome not in ATTEMPTED]
    if turned_away:
        events.emit("deferred", logging.DEBUG, topic=topic, count=len(turned_away),
                    held=sum(r.outcome == "held" for r in turned_away))


def _breaker_result(r: Result) -> str:
    """How an attempt counts for its host's circuit: a success closes it, a code 101 is neutral."""
    if r.outcome == "succeeded":
        return "ok"
    return "skip" if r.outcome == "throttled" else "fail"


def _history_event(r: Result) -> dict[str, t.Any] | None:
    if r.outcome not in ATTEMPTED:
        # waits for a concurrency place can repeat many times: not worth a history entry each
        if r.error == DEFER_REASONS["wait"]:
            return None
        return {"event": r.outcome, "t": r.started_ms, "reason": r.error, **({"until": r.due_ms} if r.due_ms else {})}
    event = {"event": "attempt", "t": r.started_ms, "n": r.task.attempts, "outcome": r.outcome,
             "code": r.code, "ms": round(r.duration * 1000, 3), "error": r.error,
             "late_ms": r.started_ms - r.task.due_ms}
    if r.due_ms:
        event["next"] = r.due_ms
    return event


NOTIFY_NAME = "httpqueue.notify_failure"


def _notify_failure(task: TaskRecord, topic_url: str | None) -> None:
    """Ask for the failure notification of a task that failed for good, if it or its topic has a URL."""
    url = (task.options or {}).get("failure_callback") or topic_url
    if not url:
        return
    try:
        notify_failure.apply_async(args=(task.id, url))
    except Exception as exc:  # the failure itself is recorded; only the notice is lost
        events.emit("notify_failed", logging.WARNING, task_id=task.id, topic=task.topic, error=str(exc)[:300])


@app.task(bind=True, name=NOTIFY_NAME, autoretry_for=(CallbackFailed, StoreUnavailable), retry_backoff=True,
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
        sent = delivery.notify(ctx.http, url, task, body, timeout=ctx.settings.callback_timeout,
                               signer=ctx.signer)
    except UnsafeCallbackError as exc:  # the guard refuses the address: retrying cannot help
        events.emit("notify_failed", logging.WARNING, task_id=task.id, topic=task.topic, error=f"refused: {exc}")
        return "refused"
    ctx.store.mark_notified(task_id, now_ms())
    events.emit("failure_notified", task_id=task.id, topic=task.topic, code=sent.code,
                duration_ms=round(sent.duration * 1000, 3))
    return "sent"


def group_dispatches(dispatches: t.Iterable[Dispatch], window_ms: int = BATCH_WINDOW_MS,
                     limit: int = MAX_BATCH) -> list[list[Dispatch]]:
    """Split dispatches into messages: one topic each, due within ``window_ms``, at most ``limit``."""
    groups: list[list[Dispatch]] = []
    for d in sorted(dispatches, key=lambda d: (d.topic, d.due_ms)):
        current = groups[-1] if groups else None
        if (current and current[0].topic == d.topic and len(current) < limit
                and d.due_ms - current[0].due_ms <= window_ms):
            current.append(d)
        else:
            groups.append([d])
    return groups


def publish(dispatches: t.Iterable[Dispatch], clock_ms: int) -> int:
    """Send the dispatches as delivery messages, each due ``due_ms - clock_ms`` from now.

    The wait is relative to the caller's clock (not an absolute ETA), so a
    promoter running on an injected clock in tests still publishes on time.
    Returns the number of messages sent.
    """
    groups = group_dispatches(dispatches)
    with app.producer_or_acquire() as producer, producer.batch(PUBLISH_BATCH):
        for group in groups:
            first = group[0]  # the earliest: groups are sorted by due time
            wait = (first.due_ms - clock_ms) / 1000
            message_id = f"{first.task_id}:{first.gen}" + (f"+{len(group) - 1}" if len(group) > 1 else "")
            items = [[d.task_id, d.gen, max(0, d.due_ms - max(first.due_ms, clock_ms))] for d in group]
            deliver.apply_async(
                args=(items,), kwargs={"topic": first.topic},
                countdown=wait if wait > 0.001 else None, task_id=message_id, producer=producer)
    return len(groups)
