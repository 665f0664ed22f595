"""What the API and the worker do with tasks and schedules, once: the service layer.

The HTTP facade validates a request's shape (marshmallow schemas) and calls a
:class:`TaskService`; the worker's schedule ticker calls the same service to
create each tick's task. So a task is built from fields in one place
(:class:`TaskSpec`), its callback is checked by the SSRF guard in one place,
and a stored task due soon is published in one place. The service takes the
process's :class:`~httpqueue.context.Context` and a publisher explicitly;
it knows nothing of Flask or of the Celery task module.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import typing as t
import uuid

from httpqueue import events, logs
from httpqueue.clock import now_ms
from httpqueue.context import Context
from httpqueue.delivery.ssrf import check_url, redact_url
from httpqueue.exceptions import InvalidInput, TaskConflict, UnsafeCallbackError
from httpqueue.publish import Publish
from httpqueue.store.records import Changed, Created, Dispatch, NewTask, TaskRecord, value_record
from httpqueue.store.schedules import Schedule, check_cron, check_timezone

OPTION_FIELDS = ("method", "headers", "timeout", "success", "retry_policy", "failure_callback")
"""Fields of a create request that are delivery options, kept with the task (``opt``)."""

OPTION_SET = frozenset(OPTION_FIELDS)

BATCH_LOG_IDS = 5
"""Task ids a batch create's log record names (the first ones created; each task's own record is at DEBUG)."""

IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d1a4e-8d0b-4c1e-9a53-1f0a4b2f7c11")
"""UUIDv5 namespace that turns an ``Idempotency-Key`` into a task id."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a task is, without when: the validated fields of a create or of a schedule's template."""

    topic: str
    callback: str
    content: t.Any
    max_retry: int = 0
    options: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: t.Mapping[str, t.Any]) -> TaskSpec:
        """From validated create fields (``retry`` and the option fields at the top level) or a template."""
        return cls(topic=fields["topic"], callback=fields["callback"], content=fields.get("content", ""),
                   max_retry=int(fields.get("retry", 0)), options=cls.options_of(fields))

    @staticmethod
    def options_of(fields: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
        """The delivery options of create fields or a template (``options``, then the top-level option fields)."""
        options = dict(fields.get("options") or {})
        if not OPTION_SET.isdisjoint(fields.keys()):
            options.update({name: fields[name] for name in OPTION_FIELDS if name in fields})
        return options

    @classmethod
    def task_of(cls, fields: t.Mapping[str, t.Any], options: t.Mapping[str, t.Any], due_ms: int,
                task_id: str | None = None, fingerprint: str | None = None) -> NewTask:
        """``from_fields(fields).at(due_ms, task_id, fingerprint)``, without the spec in between.

        A create builds one per task (a thousand per batch), and the spec
        only carried the fields over; ``options`` is :meth:`options_of` the
        fields, which the caller has checked. A test checks both give the same.
        """
        return NewTask(topic=fields["topic"], callback=fields["callback"], content=fields.get("content", ""),
                       due_ms=due_ms, max_retry=int(fields.get("retry", 0)), options=dict(options) or None,
                       task_id=task_id, fingerprint=fingerprint)

    def template(self) -> dict[str, t.Any]:
        """The spec as a schedule stores it (the create fields, options nested)."""
        return {"topic": self.topic, "callback": self.callback, "content": self.content, "retry": self.max_retry,
                **({"options": dict(self.options)} if self.options else {})}

    def at(self, due_ms: int, task_id: str | None = None, fingerprint: str | None = None) -> NewTask:
        """The store record of this spec due at ``due_ms``."""
        return NewTask(topic=self.topic, callback=self.callback, content=self.content, due_ms=due_ms,
                       max_retry=self.max_retry, options=dict(self.options) or None, task_id=task_id,
                       fingerprint=fingerprint)


@value_record
class BatchItem:
    """One result of a batch create: the id (maybe replayed), or the error and the fields at fault."""

    task_id: str | None = None
    replayed: bool = False
    error: str | None = None
    fields: t.Mapping[str, t.Any] | None = None

    def document(self) -> dict[str, t.Any]:
        if self.error is not None:
            return {"error": self.error, "fields": self.fields or {}}
        return {"id": self.task_id, **({"replayed": True} if self.replayed else {})}


def due_ms(fields: t.Mapping[str, t.Any], now: int) -> int:
    """When a create's task is due: ``execute_at`` (Unix seconds) or now + ``delay``, never in the past."""
    due = round(fields["execute_at"] * 1000) if "execute_at" in fields else now + round(fields["delay"] * 1000)
    return max(due, now)


def fingerprint(fields: t.Mapping[str, t.Any]) -> str:
    """Digest of a create request's fields (without ``id``): the same request repeated has the same one."""
    canonical = json.dumps({k: v for k, v in fields.items() if k != "id"}, sort_keys=True, separators=(",", ":"),
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def idempotent_id(fields: t.Mapping[str, t.Any], idempotency_key: str | None) -> str | None:
    """The fixed task id of an idempotent create: the client's ``id``, or the key's UUIDv5; else None."""
    if fields.get("id"):
        return str(fields["id"])
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key)) if idempotency_key else None


class TaskService:
    """Creates, deletes and requeues tasks, and manages schedules, for the API and the worker."""

    def __init__(self, ctx: Context, publish: Publish) -> None:
        self.ctx = ctx
        self.publish = publish

    # -- checks shared by every way a task comes in

    def check_callbacks(self, spec: TaskSpec) -> None:
        """The SSRF guard's create-time check of the callback and failure callback (the worker checks again)."""
        self._check_callbacks(spec.callback, spec.options)

    def _check_callbacks(self, callback: str, options: t.Mapping[str, t.Any],
                         allowed: set[str] | None = None) -> None:
        """Check both callbacks; ``allowed``: URLs this request has already had allowed (a batch repeats
        its callback a thousand times), skipped and added to."""
        for url, field in ((callback, "callback"), (options.get("failure_callback"), "failure_callback")):
            if url and (allowed is None or url not in allowed):
                self.check_url(url, field)
                if allowed is not None:
                    allowed.add(url)

    def check_url(self, url: str, field: str) -> None:
        """:class:`InvalidInput` naming ``field`` if callbacks may not go to ``url``."""
        try:
            check_url(url, self.ctx.callback_policy)
        except UnsafeCallbackError as exc:
            raise InvalidInput({field: [str(exc)]}) from None

    def new_task(self, fields: t.Mapping[str, t.Any], now: int, idempotency_key: str | None = None,
                 allowed: set[str] | None = None) -> NewTask:
        """A validated create's store record, after the SSRF checks (``allowed``: see :meth:`_check_callbacks`).

        A client-given ``id`` or an ``Idempotency-Key`` makes the create
        idempotent: the task id is fixed and the request's fingerprint is
        stored, so a repeat of the same request is a replay.
        """
        options = TaskSpec.options_of(fields)
        self._check_callbacks(fields["callback"], options, allowed)
        task_id = idempotent_id(fields, idempotency_key)
        return TaskSpec.task_of(fields, options, due_ms(fields, now), task_id, fingerprint(fields) if task_id else None)

    # -- tasks

    def create(self, fields: t.Mapping[str, t.Any], idempotency_key: str | None = None) -> Created:
        """Store one task (validated fields) and publish it if it is due soon."""
        now = now_ms()
        return self.store_one(self.new_task(fields, now, idempotency_key), now)

    def create_with_record(self, fields: t.Mapping[str, t.Any],
                           idempotency_key: str | None = None) -> tuple[Created, TaskRecord]:
        """:meth:`create`, and the task as stored: built from what was written, read back only for a replay."""
        now = now_ms()
        task = self.new_task(fields, now, idempotency_key)
        created = self.store_one(task, now)
        if created.replayed:
            return created, self.ctx.store.get(created.task_id)
        return created, created.record(task, now)

    def store_one(self, task: NewTask, now: int) -> Created:
        """Store a built task; :class:`TaskConflict` if its id was taken by a different request."""
        created = self.ctx.store.create(task, now)
        if created.replayed:
            events.emit("create_replayed", task_id=created.task_id, topic=task.topic)
            return created
        self._publish_due([created.dispatch] if created.dispatch else [], now)
        self._emit_created(created.task_id, task)
        return created

    def create_many(self, items: t.Sequence[t.Mapping[str, t.Any] | InvalidInput]) -> list[BatchItem]:
        """Store the valid ones of ``items`` in one round trip; one result per item, in order.

        An item is either validated fields or the :class:`InvalidInput` its
        validation raised; each stands on its own (an invalid item does not
        stop the others).
        """
        now = now_ms()
        results: list[BatchItem | None] = [None] * len(items)  # the valid ones' once they are stored
        valid: list[tuple[int, NewTask]] = []
        allowed: set[str] = set()
        for index, item in enumerate(items):
            if isinstance(item, InvalidInput):
                results[index] = BatchItem(error="invalid task", fields=item.fields)
                continue
            try:
                valid.append((index, self.new_task(item, now, allowed=allowed)))
            except InvalidInput as exc:
                results[index] = BatchItem(error="invalid task", fields=exc.fields)
        created = self.ctx.store.create_many([task for _, task in valid], now)
        dispatches: list[Dispatch] = []
        per_topic: dict[str, int] = {}
        first_ids: list[str] = []
        replayed = 0
        log_each = logs.enabled(logging.DEBUG)
        for (index, task), outcome in zip(valid, created):
            if isinstance(outcome, TaskConflict):
                results[index] = BatchItem(error=str(outcome), fields={"id": ["taken by a different request"]})
                continue
            results[index] = BatchItem(task_id=outcome.task_id, replayed=outcome.replayed)
            if outcome.replayed:
                replayed += 1
                continue
            per_topic[task.topic] = per_topic.get(task.topic, 0) + 1
            if len(first_ids) < BATCH_LOG_IDS:
                first_ids.append(outcome.task_id)
            if log_each:  # the single create's record, at DEBUG (the batch's own record is at INFO)
                logs.log_event("create", logging.DEBUG, self._created_fields(outcome.task_id, task))
            if outcome.dispatch is not None:
                dispatches.append(outcome.dispatch)
        self._publish_due(dispatches, now)
        self._emit_batch(per_topic, first_ids, replayed, len(items))
        return t.cast(list[BatchItem], results)

    def delete(self, task_id: str) -> Changed:
        """Cancel a task that has not fired (the original ``/delete`` and ``DELETE /v1/tasks/<id>``)."""
        changed = self.ctx.store.delete(task_id, now_ms())
        events.emit("delete", task_id=task_id, topic=changed.topic, previous_state=changed.previous.value)
        return changed

    def requeue(self, task_id: str) -> Changed:
        """Attempt a failed, scheduled or retrying task now."""
        changed = self.ctx.store.requeue(task_id, now_ms())
        events.emit("requeue", task_id=task_id, topic=changed.topic, previous_state=changed.previous.value)
        return changed

    # -- schedules

    def save_schedule(self, fields: t.Mapping[str, t.Any]) -> tuple[Schedule, int | None]:
        """Create or replace a schedule from validated fields; returns it and its next tick."""
        problems = {name: [message] for name, message in (("cron", check_cron(fields["cron"])),
                                                          ("timezone", check_timezone(fields["timezone"])))
                    if message}
        if problems:
            raise InvalidInput(problems)
        spec = TaskSpec.from_fields(fields["task"])
        try:
            self.check_callbacks(spec)
        except InvalidInput as exc:
            raise InvalidInput({"task": exc.fields}) from None
        now = now_ms()
        schedule = Schedule(id=fields.get("id") or secrets.token_urlsafe(9), cron=fields["cron"],
                            timezone=fields["timezone"], task=spec.template(), paused=fields.get("paused", False),
                            created_ms=now)
        nxt = self.ctx.schedules.save(schedule, now)
        events.emit("schedule_created", schedule=schedule.id, cron=schedule.cron, timezone=schedule.timezone)
        return schedule, None if schedule.paused else nxt

    def tick_schedules(self, now: int) -> int:
        """Create the task of every schedule tick due soon; returns how many this call created.

        Each tick's task has the id ``<schedule>@<tick ms>``, so when several
        workers race for a tick the store refuses all but one create.
        """
        created = 0
        for schedule, tick in self.ctx.schedules.due(now):
            task_id = f"{schedule.id}@{tick}"
            spec = TaskSpec.from_fields(schedule.task)
            try:
                self.store_one(spec.at(tick, task_id), now)
                created += 1
                events.emit("schedule_tick", schedule=schedule.id, task_id=task_id, tick_ms=tick, topic=spec.topic)
            except TaskConflict:
                pass  # another worker created this tick's task
            self.ctx.schedules.advance(schedule, tick, task_id, now)
        return created

    # -- shared steps

    def _publish_due(self, dispatches: list[Dispatch], now: int) -> None:
        """Publish due-soon tasks now; if the broker fails, their lease brings them back later.

        Their waits count from the clock read now, not from ``now`` (when the
        request began): Celery starts a countdown when the message is sent, so
        the time the store call took would otherwise make the task that late.
        """
        if not dispatches:
            return
        try:
            self.publish(dispatches, now_ms())
        except Exception as exc:  # the task is stored; the promoter re-issues it when its lease runs out
            events.emit("publish_failed", logging.WARNING, count=len(dispatches), error=str(exc)[:300])

    @staticmethod
    def _emit_created(task_id: str, task: NewTask) -> None:
        events.emit("create", **TaskService._created_fields(task_id, task))

    @staticmethod
    def _created_fields(task_id: str, task: NewTask) -> dict[str, t.Any]:
        """The fields of a ``create`` event (and of the single create's log line)."""
        return {"task_id": task_id, "topic": task.topic, "due_ms": task.due_ms, "max_retry": task.max_retry,
                "callback": redact_url(task.callback)}

    @staticmethod
    def _emit_batch(per_topic: dict[str, int], first_ids: list[str], replayed: int, submitted: int) -> None:
        """One ``create_batch`` event for a batch create (the metrics count it per topic; one log record)."""
        count = sum(per_topic.values())
        if not count and not replayed:
            return
        extra: dict[str, t.Any] = {}
        if replayed:
            extra["replayed"] = replayed
        refused = submitted - count - replayed
        if refused:
            extra["refused"] = refused
        events.emit("create_batch", count=count, topics=per_topic, first_ids=first_ids, **extra)


