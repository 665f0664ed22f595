"""The versioned REST API (``/v1``): tasks as resources, listing, history, statistics.

It serves the dashboard and clients that want more than the original three
endpoints; those keep working unchanged beside it (:mod:`httpqueue.api.compat`).
"""
from __future__ import annotations

import typing as t

from flask import Response
from marshmallow import Schema, ValidationError, fields, validate

from httpqueue.api.base import ApiBlueprint, answer, ctx, idempotency_key, load_body, service
from httpqueue.api.compat import CREATE  # one instance: the OpenAPI document names it once
from httpqueue.api.documents import CURSOR_PATTERN, NEXT_CURSOR, changed_document, stats_document, task_document
from httpqueue.api.ops import warn_without_worker
from httpqueue.api.schemas import IDEMPOTENCY_HEADER, ApiErrorSchema, BatchSchema, Pattern, TaskSchema
from httpqueue.exceptions import InvalidInput
from httpqueue.states import State

BATCH = BatchSchema()
"""The batch body's schema, built once (the OpenAPI document names the class, as before)."""


class ListArgs(Schema):
    class Meta:
        unknown = "raise"

    state = fields.String(validate=validate.OneOf([s.value for s in State]))
    topic = fields.String(validate=validate.Length(1, 200))
    cursor = fields.String(validate=Pattern(CURSOR_PATTERN, error="not a cursor from a previous page"))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))


class TaskPageSchema(Schema):
    tasks = fields.List(fields.Nested(TaskSchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": NEXT_CURSOR})


class HistorySchema(Schema):
    id = fields.String()
    events = fields.List(fields.Dict(), metadata={"description": "Oldest first: created, promoted, attempt, ..."})


class SeriesArgs(Schema):
    class Meta:
        unknown = "raise"

    minutes = fields.Integer(load_default=60, validate=validate.Range(1, 120))


class SeriesSchema(Schema):
    minutes = fields.List(fields.Dict(), metadata={
        "description": "Per minute: t (Unix s), succeeded, retrying, throttled, failed, late_mean_ms, "
                       "late_p50_ms, late_p99_ms (upper bounds of histogram buckets)."})


class StatsSchema(Schema):
    totals = fields.Dict(keys=fields.String(), values=fields.Integer())
    topics = fields.Dict(keys=fields.String(), values=fields.Dict())


blp = ApiBlueprint("v1", __name__, url_prefix="/v1", description="Tasks as resources")


@blp.route("/tasks", methods=["POST"])
@blp.documented_arguments(CREATE, location="json", error_status_code=400)
@blp.doc(parameters=[IDEMPOTENCY_HEADER])
@blp.documented_response(201, TaskSchema)
@blp.alt_response(200, schema=TaskSchema, description="An idempotent create repeated: the first task "
                                                       "(header `Idempotent-Replayed: true`).")
@blp.alt_response(400, schema=ApiErrorSchema, description="A field is invalid.")
@blp.alt_response(409, schema=ApiErrorSchema, description="The id (or Idempotency-Key) was used by a "
                                                          "different request.")
def create() -> Response:
    """Create a task (the original fields plus execute_at, id and delivery options); answers the stored task."""
    created, record = service().create_with_record(load_body(CREATE), idempotency_key())
    task = task_document(record)
    if created.replayed:
        return warn_without_worker(answer({**task, "replayed": True}, 200, {"Idempotent-Replayed": "true"}))
    return warn_without_worker(answer(task, 201))

@blp.route("/tasks", methods=["GET"])
@blp.arguments(ListArgs, location="query", error_status_code=400, unknown="raise")
@blp.response(200, TaskPageSchema)
def list_tasks(args: dict[str, t.Any]) -> dict[str, t.Any]:
    """Tasks by state and topic, a page at a time (pass `next_cursor` back as `cursor`)."""
    state = State(args["state"]) if "state" in args else None
    page = ctx().store.list_tasks(state, args.get("topic"), args.get("cursor"), args["limit"])
    return {"tasks": [task_document(r) for r in page.tasks], "next_cursor": page.cursor}

@blp.route("/tasks/batch", methods=["POST"])
@blp.documented_arguments(BatchSchema, location="json", error_status_code=400)
@blp.documented_response(200, description="One result per task, in order: `{\"id\"}` (plus `\"replayed\": true` "
                                          "when an item's `id` repeats an earlier create with the same fields) or "
                                          "`{\"error\", \"fields\"}`.")
def batch() -> Response:
    """Create up to 1,000 tasks; each is validated and stored on its own (an `id` makes an item idempotent)."""
    items = service().create_many([_load(item) for item in load_body(BATCH)["tasks"]])
    return warn_without_worker(answer({"results": [item.document() for item in items]}))

@blp.route("/tasks/<task_id>", methods=["GET"])
@blp.response(200, TaskSchema)
@blp.alt_response(404, schema=ApiErrorSchema, description="No such task.")
def get(task_id: str) -> dict[str, t.Any]:
    """One task."""
    return task_document(ctx().store.get(task_id))

@blp.route("/tasks/<task_id>", methods=["DELETE"])
@blp.response(200, description="Deleted (also when it was deleted before).")
@blp.alt_response(404, schema=ApiErrorSchema, description="No such task.")
@blp.alt_response(409, schema=ApiErrorSchema, description="Being delivered or finished.")
def delete(task_id: str) -> dict[str, str]:
    """Cancel a task that has not started its attempt."""
    return changed_document(service().delete(task_id), State.DELETED)

@blp.route("/tasks/<task_id>/history", methods=["GET"])
@blp.response(200, HistorySchema)
@blp.alt_response(404, schema=ApiErrorSchema, description="No such task.")
def history(task_id: str) -> dict[str, t.Any]:
    """The task's lifecycle events, oldest first (at most the last 50)."""
    return {"id": task_id, "events": ctx().store.history(task_id)}

@blp.route("/tasks/<task_id>/retry", methods=["POST"])
@blp.response(200, description="Requeued: it will be attempted now.")
@blp.alt_response(404, schema=ApiErrorSchema, description="No such task.")
@blp.alt_response(409, schema=ApiErrorSchema, description="Not failed, scheduled or retrying.")
def retry(task_id: str) -> dict[str, str]:
    """Attempt a failed (or waiting) task now."""
    changed = service().requeue(task_id)
    return changed_document(changed, State.SCHEDULED if changed.previous is State.SCHEDULED else State.RETRYING)

@blp.route("/series", methods=["GET"])
@blp.arguments(SeriesArgs, location="query", error_status_code=400)
@blp.response(200, SeriesSchema)
def series(args: dict[str, t.Any]) -> dict[str, t.Any]:
    """Attempts per minute by outcome and firing lateness (mean, approximate p50/p99), oldest first."""
    return {"minutes": ctx().series.read(args["minutes"])}

@blp.route("/stats", methods=["GET"])
@blp.response(200, StatsSchema)
def stats() -> dict[str, t.Any]:
    """Number of tasks per state, in total and per topic."""
    return stats_document(ctx().store.counts())


def _load(item: t.Any) -> t.Mapping[str, t.Any] | InvalidInput:
    """One batch item validated like a single create, or the error that says why it is not valid."""
    try:
        return t.cast("t.Mapping[str, t.Any]", CREATE.load(item))
    except ValidationError as exc:
        messages = exc.normalized_messages()
        return InvalidInput(messages if isinstance(messages, dict) else {"_schema": messages})

