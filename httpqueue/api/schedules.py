"""The schedule API (``/v1/schedules``): recurring tasks from cron expressions.

Schedules are kept by :mod:`httpqueue.store.schedules` and ticked by the
worker (:mod:`httpqueue.worker.scheduler`); this module validates requests
(the task template with the same schema as ``/create``), hands them to the
task service and shapes answers.
"""
from __future__ import annotations

import typing as t

from marshmallow import RAISE, Schema, ValidationError, fields

from httpqueue import events
from httpqueue.api.base import ApiBlueprint, ctx, service
from httpqueue.api.schemas import ApiErrorSchema, CreateTaskSchema, Pattern
from httpqueue.clock import now_ms
from httpqueue.exceptions import InvalidInput

CREATE = CreateTaskSchema()


class ScheduleInSchema(Schema):
    """A schedule to create: every tick of `cron` (in `timezone`) creates the task `task`."""

    class Meta:
        unknown = RAISE

    id = fields.String(validate=Pattern(r"^[A-Za-z0-9._-]{1,64}$",
                                                error="must be 1 to 64 of A-Z a-z 0-9 . _ -"),
                       metadata={"description": "Your name for it (default: generated). Creating it again "
                                                "replaces it."})
    cron = fields.String(required=True, metadata={"description": "5 fields (minute hour day month weekday), "
                                                                 "or 6 with seconds last.", "example": "0 9 * * 1-5"})
    timezone = fields.String(load_default="UTC", metadata={"example": "Europe/Berlin"})
    paused = fields.Boolean(load_default=False)
    task = fields.Dict(required=True, metadata={
        "description": "The task each tick creates: the fields of /create except delay and execute_at.",
        "example": {"topic": "report", "callback": "https://example.com/daily", "content": {"kind": "daily"}}})


class ScheduleOutSchema(Schema):
    id = fields.String()
    cron = fields.String()
    timezone = fields.String()
    task = fields.Dict()
    paused = fields.Boolean()
    created_ms = fields.Integer()
    next_tick_ms = fields.Integer(allow_none=True)
    last_tick_ms = fields.Integer(allow_none=True)
    last_task_id = fields.String(allow_none=True)


class ScheduleListSchema(Schema):
    schedules = fields.List(fields.Nested(ScheduleOutSchema))


blp = ApiBlueprint("schedules", __name__, url_prefix="/v1/schedules", description="Recurring tasks")


@blp.route("", methods=["POST"])
@blp.arguments(ScheduleInSchema, location="json", error_status_code=400)
@blp.response(201, ScheduleOutSchema)
@blp.alt_response(400, schema=ApiErrorSchema, description="Invalid cron, time zone or task.")
def create(body: dict[str, t.Any]) -> dict[str, t.Any]:
    """Create (or replace) a schedule; its first tick is the next one after now."""
    schedule, nxt = service().save_schedule({**body, "task": _template(body["task"])})
    return schedule.to_api(nxt)


@blp.route("", methods=["GET"])
@blp.response(200, ScheduleListSchema)
def list_all() -> dict[str, t.Any]:
    """Every schedule with its next tick."""
    return {"schedules": [s.to_api(n) for s, n in ctx().schedules.all()]}


@blp.route("/<schedule_id>", methods=["GET"])
@blp.response(200, ScheduleOutSchema)
@blp.alt_response(404, schema=ApiErrorSchema, description="No such schedule.")
def get(schedule_id: str) -> dict[str, t.Any]:
    """One schedule."""
    schedule, nxt = ctx().schedules.get(schedule_id)
    return schedule.to_api(nxt)


@blp.route("/<schedule_id>", methods=["DELETE"])
@blp.response(200, description="Deleted; tasks it already created stay.")
@blp.alt_response(404, schema=ApiErrorSchema, description="No such schedule.")
def delete(schedule_id: str) -> dict[str, str]:
    """Delete a schedule (tasks already created for coming ticks stay; delete them as tasks)."""
    ctx().schedules.delete(schedule_id)
    events.emit("schedule_deleted", schedule=schedule_id)
    return {"id": schedule_id, "state": "deleted"}


@blp.route("/<schedule_id>/pause", methods=["POST"])
@blp.response(200, ScheduleOutSchema)
@blp.alt_response(404, schema=ApiErrorSchema, description="No such schedule.")
def pause(schedule_id: str) -> dict[str, t.Any]:
    """Stop creating tasks until resumed."""
    schedule, nxt = ctx().schedules.set_paused(schedule_id, True, now_ms())
    return schedule.to_api(nxt)


@blp.route("/<schedule_id>/resume", methods=["POST"])
@blp.response(200, ScheduleOutSchema)
@blp.alt_response(404, schema=ApiErrorSchema, description="No such schedule.")
def resume(schedule_id: str) -> dict[str, t.Any]:
    """Create tasks again, from the next tick after now (missed ticks are not made up)."""
    schedule, nxt = ctx().schedules.set_paused(schedule_id, False, now_ms())
    return schedule.to_api(nxt)


def _template(task: dict[str, t.Any]) -> dict[str, t.Any]:
    """The task template, validated like a create (without a time: each tick gives it one)."""
    if "delay" in task or "execute_at" in task or "id" in task:
        raise InvalidInput({"task": ["must not have delay, execute_at or id: each tick sets them"]})
    try:
        loaded = dict(CREATE.load({**task, "delay": 0}))
    except ValidationError as exc:
        raise InvalidInput({"task": exc.normalized_messages()}) from None
    loaded.pop("delay", None)
    return loaded
