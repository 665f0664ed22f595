"""The HTTP facade: the seed's ``/create``, ``/delete``, ``/query``, plus health and batch.

Built by :func:`create_app`, so tests and gunicorn build apps from explicit
settings. Every error is JSON ``{"code", "error"[, "fields"]}`` with a message
that says what is wrong: 400 for invalid input, 404 for an unknown id, 405 for
a wrong method, 409 for a state conflict, 413 for an oversized body, 503 while
Redis is unreachable, 500 (without a traceback) for anything unexpected.
"""
from __future__ import annotations

import hashlib
import json
import logging
import typing as t
import uuid

from flask import Flask, current_app, jsonify, request
from flask_smorest import Api, Blueprint
from marshmallow import ValidationError
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import BadRequest, HTTPException

from httpqueue import __version__, auth, context, events, logs
from httpqueue.api_schedules import schedules_blueprint
from httpqueue.api_topics import topics_blueprint
from httpqueue.dashboard import dashboard_blueprint
from httpqueue.api_v1 import v1_blueprint
from httpqueue.config import Settings
from httpqueue.context import now_ms
from httpqueue.exceptions import ReplicasMissing, StoreUnavailable, TaskConflict, TaskNotFound, UnsafeCallbackError
from httpqueue.ssrf import check_url, redact_url
from httpqueue.schemas import IDEMPOTENCY_HEADER, OPTION_FIELDS, ApiErrorSchema, CreatedSchema, DeletedSchema, Schemas, TaskSchema
from httpqueue.store import Created, NewTask


class JsonBodyParser(FlaskParser):
    """Read the body as JSON whatever its Content-Type, as the seed did; refuse anything else."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req: t.Any) -> t.Any:
        data = req.get_data(cache=True)
        if not data.strip():
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = JsonBodyParser()


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask application for ``settings`` (default: from the environment)."""
    ctx = context.Context(settings) if settings is not None else context.current()
    if settings is not None and not context.installed():
        context.install(settings)  # Celery's publisher reads the global context
    s = ctx.settings
    app = Flask("httpqueue")
    app.extensions["httpqueue"] = ctx
    app.config.update(
        MAX_CONTENT_LENGTH=s.max_body, API_TITLE="httpqueue", API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3", OPENAPI_URL_PREFIX="/", OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"info": {"description": "Delayed HTTP callbacks with retries (seed-compatible API)."}},
    )
    api = Api(app)
    schemas = Schemas(s)
    api.register_blueprint(seed_blueprint(schemas))
    api.register_blueprint(v1_blueprint(schemas, ApiBlueprint, create_task, create_batch, delete_task))
    api.register_blueprint(topics_blueprint(ApiBlueprint, check_callback))
    api.register_blueprint(schedules_blueprint(ApiBlueprint, schemas, check_callback))
    app.register_blueprint(dashboard_blueprint())
    _register_errors(app)
    auth.install(app, s.api_tokens, _unauthorized)
    return app


def _unauthorized(message: str) -> t.Any:
    response = _error(401, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="httpqueue"'
    return response


def _ctx() -> context.Context:
    """The context of the app serving this request."""
    return current_app.extensions["httpqueue"]


def seed_blueprint(schemas: Schemas) -> Blueprint:
    blp = ApiBlueprint("tasks", __name__, description="The seed's task API")

    @blp.route("/create", methods=["POST"])
    @blp.arguments(schemas.create, location="json", error_status_code=400)
    @blp.doc(parameters=[IDEMPOTENCY_HEADER])
    @blp.response(200, CreatedSchema)
    @blp.alt_response(400, schema=ApiErrorSchema, description="A field is invalid; `fields` says which and why.")
    @blp.alt_response(409, schema=ApiErrorSchema, description="The id (or Idempotency-Key) was used by a "
                                                              "different request.")
    @blp.alt_response(503, schema=ApiErrorSchema, description="Redis is unreachable; retry later.")
    def create(body: dict[str, t.Any]) -> dict[str, t.Any]:
        """Create a task: POST `content` to `callback` after `delay` seconds (or at `execute_at`).

        With an `Idempotency-Key` header (or an `id` field), repeating the same
        request returns the first task with `"replayed": true`.
        """
        created = create_task(body)
        return {"id": created.task_id, **({"replayed": True} if created.replayed else {})}

    @blp.route("/delete", methods=["POST"])
    @blp.arguments(schemas.task_id, location="json", error_status_code=400)
    @blp.response(200, DeletedSchema)
    @blp.alt_response(404, schema=ApiErrorSchema, description="No such task (or past its retention).")
    @blp.alt_response(409, schema=ApiErrorSchema,
                      description="The task is being delivered now or has finished; nothing was changed.")
    def delete(body: dict[str, str]) -> dict[str, str]:
        """Cancel a task that has not fired yet. Deleting a deleted task answers 200 again."""
        return delete_task(body["id"])

    @blp.route("/query", methods=["POST"])
    @blp.arguments(schemas.task_id, location="json", error_status_code=400)
    @blp.response(200, TaskSchema)
    @blp.alt_response(404, schema=ApiErrorSchema, description="No such task (or past its retention).")
    def query(body: dict[str, str]) -> dict[str, t.Any]:
        """A task's fields (the seed's, then state, attempts, last error, next attempt)."""
        return _ctx().store.get(body["id"]).to_api()

    @blp.route("/health", methods=["GET"])
    @blp.response(200, description="The process is alive.")
    def health() -> dict[str, str]:
        """Liveness: answers as long as the process serves requests."""
        return {"status": "ok"}

    @blp.route("/ready", methods=["GET"])
    @blp.response(200, description="Redis and the broker answer.")
    @blp.alt_response(503, schema=ApiErrorSchema, description="Redis or the broker does not answer.")
    def ready() -> dict[str, str]:
        """Readiness: the task store and the Celery broker answer."""
        _ctx().store.ping()
        broker_reachable()
        return {"status": "ready"}

    @blp.route("/metrics", methods=["GET"])
    @blp.doc(responses={200: {"description": "Prometheus text format.", "content": {"text/plain": {}}}})
    def metrics_endpoint() -> t.Any:
        """Prometheus metrics: this host's API and worker processes, and task counts from Redis."""
        from httpqueue import metrics

        body, content_type = metrics.exposition(_ctx())
        return current_app.response_class(body, mimetype=None, content_type=content_type)

    return blp


def broker_reachable(timeout: float = 2.0) -> None:
    """Raise :class:`StoreUnavailable` (503) if the Celery broker does not answer within ``timeout``."""
    from httpqueue.celeryapp import app as celery_app

    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises many kinds: all mean "not ready"
        raise StoreUnavailable(f"the Celery broker is unavailable: {exc}") from exc


def delete_task(task_id: str) -> dict[str, str]:
    """Cancel a task (shared by the seed's /delete and the v1 API)."""
    changed = _ctx().store.delete(task_id, now_ms())
    events.emit("delete", task_id=task_id, topic=changed.topic, previous_state=changed.previous.value)
    return {"id": task_id, "state": "deleted", "previous_state": changed.previous.value}


IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d1a4e-8d0b-4c1e-9a53-1f0a4b2f7c11")


def new_task(body: t.Mapping[str, t.Any], now: int, idempotency_key: str | None = None) -> NewTask:
    """A validated body as a store record, after the SSRF checks of its URLs.

    A client-given ``id`` or an ``Idempotency-Key`` makes the create
    idempotent: the task id is fixed (the key's UUIDv5) and the request's
    fingerprint is stored, so a repeat of the same request is a replay.
    """
    check_callback(body["callback"])
    if body.get("failure_callback"):
        check_callback(body["failure_callback"], field="failure_callback")
    due = round(body["execute_at"] * 1000) if "execute_at" in body else now + round(body["delay"] * 1000)
    options = {name: body[name] for name in OPTION_FIELDS if name in body}
    task_id = body.get("id") or (str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key)) if idempotency_key else None)
    fingerprint = None
    if task_id:
        canonical = json.dumps({k: v for k, v in body.items() if k != "id"}, sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    return NewTask(topic=body["topic"], callback=body["callback"], content=body["content"],
                   due_ms=max(due, now), max_retry=body["retry"], options=options or None,
                   task_id=task_id, fingerprint=fingerprint)


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` header, checked (printable, at most 255 characters)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or any(ord(c) < 33 or ord(c) > 126 for c in key):
        raise ValidationError({"Idempotency-Key": ["must be 1 to 255 printable ASCII characters"]})
    return key


def check_callback(url: str, field: str = "callback") -> None:
    """The SSRF guard's create-time check (the worker checks again when it connects)."""
    try:
        check_url(url, _ctx().callback_policy)
    except UnsafeCallbackError as exc:
        raise ValidationError({field: [str(exc)]}) from None


def create_task(body: t.Mapping[str, t.Any]) -> Created:
    """Validate further, store and publish one task (shared by /create and /v1/tasks)."""
    from httpqueue.tasks import publish

    now = now_ms()
    try:
        task = new_task(body, now, idempotency_key())
    except ValidationError as exc:
        raise _invalid(exc) from None
    created = _ctx().store.create(task, now)
    if created.replayed:
        events.emit("create_replayed", task_id=created.task_id, topic=task.topic)
        return created
    _publish_created([created.dispatch] if created.dispatch else [], now, publish)
    _emit_created(created.task_id, task)
    return created


def create_batch(items: list[dict[str, t.Any]], schemas: Schemas) -> list[dict[str, t.Any]]:
    """Validate and store each item on its own; one result per item, in order."""
    from httpqueue.tasks import publish

    now = now_ms()
    results: list[dict[str, t.Any]] = []
    valid: list[tuple[int, NewTask]] = []
    for index, item in enumerate(items):
        try:
            valid.append((index, new_task(schemas.create.load(item), now)))
            results.append({})
        except ValidationError as exc:
            results.append({"error": "invalid task", "fields": exc.normalized_messages()})
    created = _ctx().store.create_many([task for _, task in valid], now)
    for (index, task), c in zip(valid, created):
        if isinstance(c, TaskConflict):
            results[index] = {"error": str(c), "fields": {"id": ["taken by a different request"]}}
        elif c.replayed:
            results[index] = {"id": c.task_id, "replayed": True}
        else:
            results[index] = {"id": c.task_id}
            _emit_created(c.task_id, task)
    _publish_created([c.dispatch for c in created if isinstance(c, Created) and c.dispatch], now, publish)
    return results


def _emit_created(task_id: str, task: NewTask) -> None:
    events.emit("create", task_id=task_id, topic=task.topic, due_ms=task.due_ms, max_retry=task.max_retry,
                callback=redact_url(task.callback))


def _publish_created(dispatches: list[t.Any], now: int, publish: t.Callable[..., int]) -> None:
    """Publish due-soon tasks now; if the broker fails, their lease brings them back later."""
    if not dispatches:
        return
    try:
        publish(dispatches, now)
    except Exception as exc:  # the task is stored; the promoter re-issues it when its lease runs out
        events.emit("publish_failed", logging.WARNING, count=len(dispatches), error=str(exc)[:300])


def _invalid(exc: ValidationError) -> HTTPException:
    error = BadRequest()
    error.data = {"messages": {"json": exc.normalized_messages()}}
    return error


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> t.Any:
        fields = (getattr(exc, "data", None) or {}).get("messages", {})
        fields = fields.get("json", fields) if isinstance(fields, dict) else fields
        return _error(exc.code or 500, _message(exc, fields), fields or None)

    @app.errorhandler(ValidationError)
    def invalid(exc: ValidationError) -> t.Any:
        return http_error(_invalid(exc))

    @app.errorhandler(TaskNotFound)
    def not_found(exc: TaskNotFound) -> t.Any:
        return _error(404, str(exc))

    @app.errorhandler(TaskConflict)
    def conflict(exc: TaskConflict) -> t.Any:
        return _error(409, str(exc), state=exc.state)

    @app.errorhandler(StoreUnavailable)
    def unavailable(exc: StoreUnavailable) -> t.Any:
        events.emit("store_unavailable", logging.WARNING, error=str(exc)[:300])
        message = (str(exc) if isinstance(exc, ReplicasMissing)
                   else "the task store (Redis) is unavailable; nothing was changed, retry shortly")
        response = _error(503, message)
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> t.Any:
        logs.LOGGER.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal error; the details are in the server log")


def _message(exc: HTTPException, fields: t.Any) -> str:
    if exc.code == 413:
        return f"the request body is larger than {_ctx().settings.max_body} bytes"
    if exc.code == 405:
        return f"{request.method} is not allowed here; use {', '.join(sorted(exc.valid_methods or []))}"
    if exc.code == 404:
        return f"no such endpoint: {request.path}"
    if fields and isinstance(fields, dict):
        parts = [f"{name}: {' '.join(_flatten(msgs))}" for name, msgs in fields.items()]
        return "invalid request: " + "; ".join(parts)
    return exc.description or exc.name


def _flatten(messages: t.Any) -> list[str]:
    if isinstance(messages, dict):
        return [f"{k}: {m}" for k, v in messages.items() for m in _flatten(v)]
    if isinstance(messages, list):
        return [m for item in messages for m in _flatten(item)]
    return [str(messages)]


def _error(code: int, message: str, fields: t.Any = None, **extra: t.Any) -> t.Any:
    body: dict[str, t.Any] = {"code": code, "error": message, **extra}
    if fields:
        body["fields"] = fields
    response = jsonify(body)
    response.status_code = code
    return response
