"""The original Go httpqueue's endpoints: ``/create``, ``/delete``, ``/query``.

Same paths, same fields, same answers (``{"id"}``; the task's fields with
``creat_time`` spelled as the original spells it), so its clients work unchanged.
"""
from __future__ import annotations

import typing as t

from flask import Response

from httpqueue.api.base import ApiBlueprint, answer, ctx, idempotency_key, load_body, service
from httpqueue.api.documents import changed_document, task_document
from httpqueue.api.ops import warn_without_worker
from httpqueue.api.schemas import (
    IDEMPOTENCY_HEADER, ApiErrorSchema, CreatedSchema, CreateTaskSchema, DeletedSchema, TaskIdSchema, TaskSchema,
)
from httpqueue.states import State

blp = ApiBlueprint("tasks", __name__, description="The original Go httpqueue's task API")

CREATE = CreateTaskSchema()
TASK_ID = TaskIdSchema()
"""Schema instances, built once: webargs would build (and deep-copy the fields of) a class on every request.

``/create`` and ``POST /v1/tasks`` load their body with :data:`CREATE`
themselves (:func:`~httpqueue.api.base.load_body`): the decorators above them
only document."""


@blp.route("/create", methods=["POST"])
@blp.documented_arguments(CREATE, location="json", error_status_code=400)
@blp.doc(parameters=[IDEMPOTENCY_HEADER])
@blp.documented_response(200, CreatedSchema)
@blp.alt_response(400, schema=ApiErrorSchema, description="A field is invalid; `fields` says which and why.")
@blp.alt_response(409, schema=ApiErrorSchema, description="The id (or Idempotency-Key) was used by a "
                                                          "different request.")
@blp.alt_response(503, schema=ApiErrorSchema, description="Redis is unreachable; retry later.")
def create() -> Response:
    """Create a task: POST `content` to `callback` after `delay` seconds (or at `execute_at`).

    With an `Idempotency-Key` header (or an `id` field), repeating the same
    request returns the first task with `"replayed": true`.
    """
    created = service().create(load_body(CREATE), idempotency_key())
    return warn_without_worker(answer({"id": created.task_id, **({"replayed": True} if created.replayed else {})}))


@blp.route("/delete", methods=["POST"])
@blp.arguments(TASK_ID, location="json", error_status_code=400)
@blp.response(200, DeletedSchema)
@blp.alt_response(404, schema=ApiErrorSchema, description="No such task (or past its retention).")
@blp.alt_response(409, schema=ApiErrorSchema,
                  description="The task is being delivered now or has finished; nothing was changed.")
def delete(body: dict[str, str]) -> dict[str, str]:
    """Cancel a task that has not fired yet. Deleting a deleted task answers 200 again."""
    return changed_document(service().delete(body["id"]), State.DELETED)


@blp.route("/query", methods=["POST"])
@blp.arguments(TASK_ID, location="json", error_status_code=400)
@blp.response(200, TaskSchema)
@blp.alt_response(404, schema=ApiErrorSchema, description="No such task (or past its retention).")
def query(body: dict[str, str]) -> dict[str, t.Any]:
    """A task's fields (the original's, then state, attempts, last error, next attempt)."""
    return task_document(ctx().store.get(body["id"]))
