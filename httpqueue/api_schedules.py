"""The schedule API (``/v1/schedules``): recurring tasks from cron expressions.

Ticking lives in :mod:`httpqueue.schedules`; this module validates requests
(the task template with the same schema as ``/create``) and shapes answers.
"""
from __future__ import annotations

import secrets
import typing as t

from flask import current_app
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from httpqueue import events
from httpqueue.context import Context, now_ms
from httpqueue.schemas import OPTION_FIELDS, ApiErrorSchema
from httpqueue.schedules import Schedule, ScheduleStore, check_cron, check_timezone


def _ctx() -> Context:
    return current_app.extensions["httpqueue"]


def _schedules() -> ScheduleStore:
    return ScheduleStore(_ctx().store)


class ScheduleInSchema(Schema):
    """A schedule to create: every tick of `cron` (in `timezone`) creates the task `task`."""

    class Meta:
        unknown = RAISE

    id = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9._-]{1,64}$",
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


def schedules_blueprint(blueprint_cls: type, schemas: t.Any, check_callback: t.Callable[..., None]) -> t.Any:
    blp = blueprint_cls("schedules", __name__, url_prefix="/v1/schedules", description="Recurring tasks")

    @blp.route("", methods=["POST"])
    @blp.arguments(ScheduleInSchema, location="json", error_status_code=400)
    @blp.response(201, ScheduleOutSchema)
    @blp.alt_response(400, schema=ApiErrorSchema, description="Invalid cron, time zone or task.")
    def create(body: dict[str, t.Any]) -> dict[str, t.Any]:
        """Create (or replace) a schedule; its first tick is the next one after now."""
        problems = {name: [msg] for name, msg in (("cron", check_cron(body["cron"])),
                                                   ("timezone", check_timezone(body["timezone"]))) if msg}
        if problems:
            raise ValidationError(problems)
        task = _template(body["task"], schemas, check_callback)
        schedule = Schedule(id=body.get("id") or secrets.token_urlsafe(9), cron=body["cron"],
                            timezone=body["timezone"], task=task, paused=body["paused"], created_ms=now_ms())
        nxt = _schedules().save(schedule, now_ms())
        events.emit("schedule_created", schedule=schedule.id, cron=schedule.cron, timezone=schedule.timezone)
        return schedule.to_api(nxt)

    @blp.route("", methods=["GET"])
    @blp.response(200, ScheduleListSchema)
    def list_all() -> dict[str, t.Any]:
        """Every schedule with its next tick."""
        return {"schedules": [s.to_api(n) for s, n in _schedules().all()]}

    @blp.route("/<schedule_id>", methods=["GET"])
    @blp.response(200, ScheduleOutSchema)
    @blp.alt_response(404, schema=ApiErrorSchema, description="No such schedule.")
    def get(schedule_id: str) -> dict[str, t.Any]:
        """One schedule."""
        schedule, nxt = _schedules().get(schedule_id)
        return schedule.to_api(nxt)

    @blp.route("/<schedule_id>", methods=["DELETE"])
    @blp.response(200, description="Deleted; tasks it already created stay.")
    @blp.alt_response(404, schema=ApiErrorSchema, description="No such schedule.")
    def delete(schedule_id: str) -> dict[str, str]:
        """Delete a schedule (tasks already created for coming ticks stay; delete them as tasks)."""
        _schedules().delete(schedule_id)
        events.emit("schedule_deleted", schedule=schedule_id)
        return {"id": schedule_id, "state": "deleted"}

    @blp.route("/<schedule_id>/pause", methods=["POST"])
    @blp.response(200, ScheduleOutSchema)
    def pause(schedule_id: str) -> dict[str, t.Any]:
        """Stop creating tasks until resumed."""
        schedule, nxt = _schedules().set_paused(schedule_id, True, now_ms())
        return schedule.to_api(nxt)

    @blp.route("/<schedule_id>/resume", methods=["POST"])
    @blp.response(200, ScheduleOutSchema)
    def resume(schedule_id: str) -> dict[str, t.Any]:
        """Create tasks again, from the next tick after now (missed ticks are not made up)."""
        schedule, nxt = _schedules().set_paused(schedule_id, False, now_ms())
        return schedule.to_api(nxt)

    return blp


def _template(task: dict[str, t.Any], schemas: t.Any, check_callback: t.Callable[..., None]) -> dict[str, t.Any]:
    """The task template, validated like a create (without a time: each tick gives it one)."""
    if "delay" in task or "execute_at" in task or "id" in task:
        raise ValidationError({"task": ["must not have delay, execute_at or id: each tick sets them"]})
    try:
        loaded = schemas.create.load({**task, "delay": 0})
        check_callback(loaded["callback"])
        if loaded.get("failure_callback"):
            check_callback(loaded["failure_callback"], field="failure_callback")
    except ValidationError as exc:
        raise ValidationError({"task": exc.normalized_messages()}) from None
    options = {name: loaded[name] for name in OPTION_FIELDS if name in loaded}
    return {"topic": loaded["topic"], "callback": loaded["callback"], "content": loaded["content"],
            "retry": loaded["retry"], **({"options": options} if options else {})}
