"""One callback attempt and what follows from it: the outcome, the next due time, and recording it.

The Celery task (:mod:`httpqueue.worker.tasks`) claims and admits a message's
tasks; :func:`attempt_async` then sends each callback (on the process's
delivery loop, through the launcher) and decides the
:class:`~httpqueue.states.Outcome`; :func:`record` stores a
message's outcomes, its topic's bookkeeping and its statistics in one round
trip and emits one event per attempt.

A failed attempt is retried after Celery's own exponential backoff formula
(``celery.utils.time.get_exponential_backoff_interval`` with ``retry_base``,
``retry_backoff_max`` and ``retry_jitter``), or the task's own
``retry_policy``. The retry is *parked* in the store's timer rather than
published as a long ETA message, so a backoff of days costs no worker memory
and is never redelivered by kombu's ``visibility_timeout``.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import typing as t

from celery.utils.time import get_exponential_backoff_interval

from httpqueue import events
from httpqueue.clock import now_ms
from httpqueue.config import Settings
from httpqueue.context import Context
from httpqueue.delivery import aio, http
from httpqueue.exceptions import CallbackFailed, CallbackThrottled, UnsafeCallbackError
from httpqueue.states import ATTEMPTED, QUIET_OUTCOMES, AdmitAction, Outcome
from httpqueue.store.records import Settlement, TaskRecord
from httpqueue.store.scripts import ScriptCalls
from httpqueue.store.topics import Verdict, host_of

DEFER_REASONS = {AdmitAction.SLOT: "rate limit", AdmitAction.OPEN: "circuit open",
                 AdmitAction.WAIT: "concurrency limit"}
"""Why a task was deferred, as its history and ``last_error`` say it."""


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of one claimed task in one message."""

    task: TaskRecord
    outcome: Outcome
    started_ms: int
    finished_ms: int
    due_ms: int = 0
    code: int | None = None
    error: str | None = None
    duration: float = 0.0
    slot_ms: int | None = None
    taken_ms: int = 0
    """When the pool process took the task's delivery message (0: not known); for the lateness's parts."""

    @property
    def attempted(self) -> bool:
        return self.outcome in ATTEMPTED


def backoff_ms(settings: Settings, retries: int) -> int:
    """Wait before retry number ``retries + 1``: ``retry_base`` x 2^retries seconds (Celery's formula)."""
    return 1000 * get_exponential_backoff_interval(
        factor=settings.retry_base, retries=retries, maximum=settings.retry_backoff_max,
        full_jitter=settings.retry_jitter)


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


def throttle_wait_ms(exc: CallbackThrottled, task: TaskRecord, s: Settings) -> int:
    """Wait after code 101: the receiver's Retry-After, else base x 2^n; never above the cap."""
    wanted = exc.retry_after if exc.retry_after is not None else s.retry_base * 2 ** task.throttles
    return int(min(wanted, s.throttle_delay_max) * 1000)


def turned_away(task: TaskRecord, verdict: Verdict) -> Result:
    """A task its topic did not admit: held while paused, or deferred to ``until_ms``."""
    now = now_ms()
    if verdict.action is AdmitAction.HELD:
        return Result(task, Outcome.HELD, now, now, error="topic paused")
    return Result(task, Outcome.DEFERRED, now, now, verdict.until_ms, error=DEFER_REASONS[verdict.action],
                  slot_ms=verdict.until_ms if verdict.action is AdmitAction.SLOT else None)


async def attempt_async(ctx: Context, task: TaskRecord, taken_ms: int = 0) -> Result:
    """POST one callback and decide what happens next; never raises for a receiver's fault.

    Runs on the process's delivery loop (:mod:`httpqueue.delivery.aio`).
    ``taken_ms``: when the pool process took the delivery message (logged with the attempt).
    """
    s = ctx.settings
    started = now_ms()
    try:
        sent = await http.send_async(aio.client(ctx.callback_policy), task, task.attempts,
                                     timeout=s.callback_timeout, follow_redirects=s.follow_redirects,
                                     signer=ctx.signer)
    except (UnsafeCallbackError, CallbackThrottled, CallbackFailed) as exc:
        return dataclasses.replace(unsuccessful(s, task, started, exc), taken_ms=taken_ms)
    return Result(task, Outcome.SUCCEEDED, started, now_ms(), code=sent.code, duration=sent.duration,
                  taken_ms=taken_ms)


def attempt(ctx: Context, task: TaskRecord) -> Result:
    """:func:`attempt_async` from a thread other than the delivery loop's: waits for its result."""
    return aio.run(attempt_async(ctx, task))


def unsuccessful(s: Settings, task: TaskRecord, started: int,
                 exc: UnsafeCallbackError | CallbackThrottled | CallbackFailed) -> Result:
    """The result of an attempt that did not succeed: refused, throttled, retrying or failed."""
    if isinstance(exc, UnsafeCallbackError):
        return Result(task, Outcome.FAILED, started, now_ms(), error=f"refused: {exc}")
    if isinstance(exc, CallbackThrottled):
        if task.throttles < s.throttle_limit:
            finished = now_ms()
            return Result(task, Outcome.THROTTLED, started, finished, finished + throttle_wait_ms(exc, task, s),
                          exc.code, str(exc), exc.duration)
        return failed_or_retry(s, task, started, CallbackFailed(
            f"receiver answered code 101 {task.throttles + 1} times (limit {s.throttle_limit})",
            code=101, duration=exc.duration))
    return failed_or_retry(s, task, started, exc)


def failed_or_retry(s: Settings, task: TaskRecord, started: int, exc: CallbackFailed) -> Result:
    """A failed attempt: park the next one after the backoff, or fail for good when retries are spent.

    A task's own ``retry_policy`` replaces the settings' backoff, and its
    ``max_duration`` fails the task once the next attempt would start later
    than that after the first due time.
    """
    finished = now_ms()
    policy = (task.options or {}).get("retry_policy")
    if task.has_retry < task.max_retry:
        wait = (policy_backoff_ms(policy, task.has_retry, s.retry_base, s.retry_backoff_max, s.retry_jitter)
                if policy else backoff_ms(s, task.has_retry))
        limit = (policy or {}).get("max_duration")
        if limit is None or finished + wait - task.execute_ms <= limit * 1000:
            return Result(task, Outcome.RETRYING, started, finished, finished + wait, exc.code, str(exc),
                          exc.duration)
        exc = CallbackFailed(f"{exc} (retry_policy.max_duration of {limit:g}s reached)", exc.code, exc.duration)
    return Result(task, Outcome.FAILED, started, finished, 0, exc.code, str(exc), exc.duration)


NotifyFailure = t.Callable[[str, str], None]
"""Asks for the failure notification of a task (id, URL): the Celery task's ``send``."""


def record(ctx: Context, topic: str, results: t.Sequence[Result], notify: NotifyFailure,
           failure_callback: str | None = None) -> list[bool]:
    """Store every outcome with its history event, and the topic's bookkeeping, in one round trip.

    Then emit one event per attempt (and one per message for tasks turned
    away), and ask for the failure notification of tasks that failed for good.
    Returns, per result, whether the store took it (False: the task had moved
    on, e.g. its lease ran out and another message has it now).
    """
    if not results:
        return []
    now = now_ms()
    settlements = [Settlement(r.task.id, r.task.gen, r.finished_ms, r.outcome, r.due_ms, r.code, r.error,
                              history_event(r), r.slot_ms) for r in results]
    outcomes = [(r.task.id, host_of(r.task.callback), breaker_result(r)) for r in results if r.attempted]
    batch: list[ScriptCalls] = []

    def also(calls: ScriptCalls) -> None:
        batch.append(calls)
        if outcomes:
            ctx.topics.finish(topic, outcomes, now, calls=calls)
        attempted = [(r.outcome, float(r.started_ms - r.task.due_ms)) for r in results if r.attempted]
        ctx.series.add(calls, ctx.keys.shard_of(results[0].task.id), attempted, now)

    recorded = ctx.store.settle_many(settlements, also=also)
    opened = batch[0].results[len(settlements):len(settlements) + 1] if batch and outcomes else []
    for host, until in zip(opened[0][::2], opened[0][1::2]) if opened else ():
        events.emit("circuit_open", logging.WARNING, topic=topic, host=host, until_ms=int(until))
    for result, ok in zip(results, recorded):
        if not result.attempted:
            continue
        quiet = result.outcome in QUIET_OUTCOMES
        events.emit("attempt", logging.INFO if quiet else logging.WARNING,
                    task_id=result.task.id, topic=result.task.topic, attempt=result.task.attempts,
                    outcome=result.outcome.value, answer=f'{{"code":{result.code}}}' if quiet else None,
                    error=result.error, code=result.code, duration_ms=round(result.duration * 1000, 3),
                    late_ms=result.started_ms - result.task.due_ms, next_attempt_ms=result.due_ms or None,
                    taken_late_ms=result.taken_ms - result.task.due_ms if result.taken_ms else None,
                    recorded=ok)
        if ok and result.outcome is Outcome.FAILED:
            url = (result.task.options or {}).get("failure_callback") or failure_callback
            if url:
                notify(result.task.id, url)
    away = [r for r in results if not r.attempted]
    if away:
        events.emit("deferred", logging.DEBUG, topic=topic, count=len(away),
                    held=sum(r.outcome is Outcome.HELD for r in away))
    return recorded


def breaker_result(r: Result) -> str:
    """How an attempt counts for its host's circuit: a success closes it, a code 101 is neutral."""
    if r.outcome is Outcome.SUCCEEDED:
        return "ok"
    return "skip" if r.outcome is Outcome.THROTTLED else "fail"


def history_event(r: Result) -> dict[str, t.Any] | None:
    """The task's history entry for this result (waits for a concurrency place are not worth one each)."""
    if not r.attempted:
        if r.error == DEFER_REASONS[AdmitAction.WAIT]:
            return None
        return {"event": r.outcome.value, "t": r.started_ms, "reason": r.error,
                **({"until": r.due_ms} if r.due_ms else {})}
    event: dict[str, t.Any] = {"event": "attempt", "t": r.started_ms, "n": r.task.attempts,
                               "outcome": r.outcome.value, "code": r.code, "ms": round(r.duration * 1000, 3),
                               "error": r.error, "late_ms": r.started_ms - r.task.due_ms}
    if r.due_ms:
        event["next"] = r.due_ms
    return event


REPORT_ERROR_CHARS = 120
"""Longest error text a message report quotes (the task's history has the whole of it)."""

REPORT_CHARS = 4000
"""Longest message report: what one task event carries to Flower (a full message whose tasks all succeeded
fits; many distinct errors are clipped, and each task's history keeps its own)."""

STALE = "stale: already attempted, deleted or re-issued"
LOST = "lost: the attempt raised; re-issued when its lease runs out"
UNRECORDED = "not recorded (the task had moved on: its lease ran out, or it was deleted)"


@dataclasses.dataclass(frozen=True)
class MessageReport:
    """What became of the tasks one delivery message carried, as Flower shows the message.

    ``text`` is the message's result ("3 tasks: 2 succeeded (a, b); 1
    retrying: receiver answered code 500 (c)"); ``failures`` names the tasks
    that failed for good (empty when none did: the message then succeeded).
    """

    text: str
    failures: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def message_report(carried: int, results: t.Sequence[Result], recorded: t.Sequence[bool],
                   stale: t.Sequence[str] = (), lost: t.Sequence[str] = ()) -> MessageReport:
    """Group a message's tasks by outcome and error, each group with its task ids (pure).

    ``recorded`` says, per result, whether the store took it (``record``'s
    answer): an outcome the store refused belongs to a task that moved on, so
    it is reported apart and a refused failure does not fail the message.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    failed: dict[str, list[str]] = {}
    oks = [*recorded[:len(results)], *[False] * (len(results) - len(recorded))]
    order = list(Outcome)
    for result, ok in sorted(zip(results, oks), key=lambda pair: (not pair[1], order.index(pair[0].outcome))):
        error = _short(result.error) if result.outcome is not Outcome.SUCCEEDED else ""
        label = result.outcome.value if ok else f"{result.outcome.value}, {UNRECORDED}"
        groups.setdefault((label, error), []).append(result.task.id)
        if ok and result.outcome is Outcome.FAILED:
            failed.setdefault(error, []).append(result.task.id)
    for label, ids in ((STALE, stale), (LOST, lost)):
        if ids:
            groups[(label, "")] = list(ids)
    text = f"{carried} task{'s' if carried != 1 else ''}: " + "; ".join(
        f"{len(ids)} {label}{': ' + error if error else ''} ({', '.join(ids)})" for (label, error), ids in groups.items())
    failures = ""
    if failed:
        count = sum(len(ids) for ids in failed.values())
        failures = f"{count} of {carried} task{'s' if carried != 1 else ''} failed for good: " + "; ".join(
            f"{error or 'failed'} ({', '.join(ids)})" for error, ids in failed.items())
    return MessageReport(_clip(text, REPORT_CHARS), _clip(failures, REPORT_CHARS))


def _short(error: str | None) -> str:
    return _clip(" ".join((error or "").split()), REPORT_ERROR_CHARS)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"
