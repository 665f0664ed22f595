"""Every API operation as a :class:`Call`: method, path, body, how to read the answer, whether to resend.

The sync and async clients send the same calls, so each operation is
described once here and both clients are thin. :data:`OPERATIONS` maps each
operation of the OpenAPI document to its client method; a test walks
``/openapi.json`` and checks that map both ways.
"""
from __future__ import annotations

import dataclasses
import enum
import typing as t
import uuid
from urllib.parse import quote

from httpqueue.client.models import (
    BatchResult, Changed, Created, Event, ExportStatus, Minute, Node, Readiness, Schedule, Stats, Status, Task,
    TaskPage, TaskSpec,
    Topic,
)
from httpqueue.states import State

T = t.TypeVar("T")

BATCH_MAX = 1000
"""Most tasks the API takes in one batch request; :func:`batch_chunks` splits longer lists."""

IDEMPOTENCY_HEADER = "Idempotency-Key"


class Method(enum.StrEnum):
    GET = "GET"
    POST = "POST"
    PATCH = "PATCH"
    DELETE = "DELETE"


class Resend(enum.Enum):
    """When a failed call may be sent again without doing its work twice."""

    ALWAYS = "always"
    """On a 503 or any connection error: reads, deletes, settings, and creates carrying an idempotency key."""

    UNSENT = "unsent"
    """On a 503 or a refused connection only: the API said it changed nothing, or never saw the request.
    For calls whose repetition would act twice (requeue, purge, replay)."""

    NEVER = "never"
    """Never: the answer is the result, whatever it is (``/ready``'s 503 means "not ready")."""


class Keep:
    """The type of :data:`KEEP`."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = Keep()
"""A topic setting left as it is (``None`` clears it)."""


@dataclasses.dataclass(frozen=True)
class Call(t.Generic[T]):
    """One request and how to read its answer."""

    method: Method
    path: str
    read: t.Callable[[t.Any], T]
    json: t.Any = None
    params: t.Mapping[str, t.Any] | None = None
    headers: t.Mapping[str, str] = dataclasses.field(default_factory=dict)
    resend: Resend = Resend.ALWAYS
    accept: frozenset[int] = frozenset({200, 201})
    """Statuses whose body is the result; others raise."""
    text: bool = False
    """The body is text (``/metrics``), not JSON."""


def _segment(value: str) -> str:
    """A path segment: a task id or topic with ``/`` or ``?`` in it still names one resource."""
    return quote(value, safe="")


def _params(**values: t.Any) -> dict[str, t.Any]:
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in values.items() if v is not None}


def new_key() -> str:
    """A fresh idempotency key or id (a UUID4 fits every id pattern of the API)."""
    return str(uuid.uuid4())


# -- tasks (/v1)

def create(spec: TaskSpec, idempotency_key: str | None) -> Call[Task]:
    """``POST /v1/tasks``; without an id or a key of the caller's, a key of its own makes a resend safe."""
    key = idempotency_key or (None if spec.id else new_key())
    return Call(Method.POST, "/v1/tasks", Task.from_json, json=spec.to_json(),
                headers={IDEMPOTENCY_HEADER: key} if key else {})


def get(task_id: str) -> Call[Task]:
    return Call(Method.GET, f"/v1/tasks/{_segment(task_id)}", Task.from_json)


def delete(task_id: str) -> Call[Changed]:
    return Call(Method.DELETE, f"/v1/tasks/{_segment(task_id)}", Changed.from_json)


def retry(task_id: str) -> Call[Changed]:
    return Call(Method.POST, f"/v1/tasks/{_segment(task_id)}/retry", Changed.from_json, resend=Resend.UNSENT)


def list_tasks(state: State | None, topic: str | None, cursor: str | None, limit: int) -> Call[TaskPage]:
    return Call(Method.GET, "/v1/tasks", TaskPage.from_json,
                params=_params(state=state, topic=topic, cursor=cursor, limit=limit))


def history(task_id: str) -> Call[list[Event]]:
    return Call(Method.GET, f"/v1/tasks/{_segment(task_id)}/history",
                lambda body: [Event.from_json(e) for e in body["events"]])


def batch(specs: t.Sequence[TaskSpec]) -> Call[list[BatchResult]]:
    """One ``POST /v1/tasks/batch`` of at most :data:`BATCH_MAX`; items without an id get one, so a resend
    finds the tasks the first request made instead of making them again."""
    if len(specs) > BATCH_MAX:
        raise ValueError(f"at most {BATCH_MAX} tasks per batch request (create_many splits longer lists)")
    items = [(s if s.id else s.with_id(new_key())).to_json() for s in specs]
    return Call(Method.POST, "/v1/tasks/batch", lambda body: [BatchResult.from_json(r) for r in body["results"]],
                json={"tasks": items})


def batch_chunks(specs: t.Iterable[TaskSpec], size: int = BATCH_MAX) -> t.Iterator[list[TaskSpec]]:
    """``specs`` in lists of at most ``size`` (the API's batch limit)."""
    if not 1 <= size <= BATCH_MAX:
        raise ValueError(f"a batch holds 1 to {BATCH_MAX} tasks")
    chunk: list[TaskSpec] = []
    for spec in specs:
        chunk.append(spec)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def series(minutes: int) -> Call[list[Minute]]:
    return Call(Method.GET, "/v1/series", lambda body: [Minute.from_json(m) for m in body["minutes"]],
                params={"minutes": minutes})


def stats() -> Call[Stats]:
    return Call(Method.GET, "/v1/stats", Stats.from_json)


# -- the original Go httpqueue's endpoints

def original_create(spec: TaskSpec, idempotency_key: str | None) -> Call[Created]:
    key = idempotency_key or (None if spec.id else new_key())
    return Call(Method.POST, "/create", Created.from_json, json=spec.to_json(),
                headers={IDEMPOTENCY_HEADER: key} if key else {})


def original_delete(task_id: str) -> Call[Changed]:
    return Call(Method.POST, "/delete", Changed.from_json, json={"id": task_id})


def original_query(task_id: str) -> Call[Task]:
    return Call(Method.POST, "/query", Task.from_json, json={"id": task_id})


# -- topics

def _topic(topic: str, action: str = "") -> str:
    return f"/v1/topics/{_segment(topic)}{action}"


def list_topics() -> Call[list[Topic]]:
    return Call(Method.GET, "/v1/topics", lambda body: [Topic.from_json(x) for x in body["topics"]])


def get_topic(topic: str) -> Call[Topic]:
    return Call(Method.GET, _topic(topic), Topic.from_json)


def configure_topic(topic: str, rate_limit: float | None | Keep, concurrency: int | None | Keep,
                    failure_callback: str | None | Keep) -> Call[Topic]:
    """``PATCH``: a setting given as ``None`` is cleared, one left as :data:`KEEP` is not sent."""
    changes = {name: value for name, value in (("rate_limit", rate_limit), ("concurrency", concurrency),
                                               ("failure_callback", failure_callback)) if value is not KEEP}
    return Call(Method.PATCH, _topic(topic), Topic.from_json, json=changes)


def pause_topic(topic: str) -> Call[Topic]:
    return Call(Method.POST, _topic(topic, "/pause"), Topic.from_json)


def resume_topic(topic: str) -> Call[Topic]:
    return Call(Method.POST, _topic(topic, "/resume"), Topic.from_json)


def _count(body: t.Any) -> int:
    return int(body["count"])


def purge_topic(topic: str) -> Call[int]:
    return Call(Method.POST, _topic(topic, "/purge"), _count, resend=Resend.UNSENT)


def dead_letters(topic: str, cursor: str | None, limit: int) -> Call[TaskPage]:
    return Call(Method.GET, _topic(topic, "/dead-letters"), TaskPage.from_json,
                params=_params(cursor=cursor, limit=limit))


def _ids(ids: t.Sequence[str] | None) -> dict[str, t.Any]:
    return {} if ids is None else {"ids": list(ids)}


def replay_dead_letters(topic: str, ids: t.Sequence[str] | None) -> Call[int]:
    return Call(Method.POST, _topic(topic, "/dead-letters/replay"), _count, json=_ids(ids), resend=Resend.UNSENT)


def delete_dead_letters(topic: str, ids: t.Sequence[str] | None) -> Call[int]:
    return Call(Method.POST, _topic(topic, "/dead-letters/delete"), _count, json=_ids(ids), resend=Resend.UNSENT)


# -- schedules

def _schedule(schedule_id: str, action: str = "") -> str:
    return f"/v1/schedules/{_segment(schedule_id)}{action}"


def create_schedule(cron: str, task: TaskSpec, schedule_id: str | None, timezone: str,
                    paused: bool) -> Call[Schedule]:
    """Without an id the client names the schedule, so a resend replaces it rather than adding a second."""
    template = {k: v for k, v in task.to_json().items() if k not in ("delay", "execute_at", "id")}
    return Call(Method.POST, "/v1/schedules", Schedule.from_json,
                json={"id": schedule_id or uuid.uuid4().hex, "cron": cron, "timezone": timezone, "paused": paused,
                      "task": template})


def list_schedules() -> Call[list[Schedule]]:
    return Call(Method.GET, "/v1/schedules", lambda body: [Schedule.from_json(s) for s in body["schedules"]])


def get_schedule(schedule_id: str) -> Call[Schedule]:
    return Call(Method.GET, _schedule(schedule_id), Schedule.from_json)


def delete_schedule(schedule_id: str) -> Call[None]:
    return Call(Method.DELETE, _schedule(schedule_id), lambda body: None)


def pause_schedule(schedule_id: str) -> Call[Schedule]:
    return Call(Method.POST, _schedule(schedule_id, "/pause"), Schedule.from_json)


def resume_schedule(schedule_id: str) -> Call[Schedule]:
    return Call(Method.POST, _schedule(schedule_id, "/resume"), Schedule.from_json)


# -- operations

def nodes() -> Call[list[Node]]:
    return Call(Method.GET, "/v1/nodes", lambda body: [Node.from_json(n) for n in body["nodes"]])


def health() -> Call[bool]:
    return Call(Method.GET, "/health", lambda body: body.get("status") == "ok")


def ready() -> Call[Readiness]:
    return Call(Method.GET, "/ready", Readiness.from_json, resend=Resend.NEVER, accept=frozenset({200, 503}))


def export_status() -> Call[ExportStatus]:
    return Call(Method.GET, "/v1/export", ExportStatus.from_json)


def status() -> Call[Status]:
    return Call(Method.GET, "/status", Status.from_json)


def metrics() -> Call[str]:
    return Call(Method.GET, "/metrics", str, text=True)


OPERATIONS: dict[tuple[str, str], str] = {
    ("POST", "/create"): "original_create",
    ("POST", "/delete"): "original_delete",
    ("POST", "/query"): "original_query",
    ("GET", "/health"): "health",
    ("GET", "/ready"): "ready",
    ("GET", "/status"): "status",
    ("GET", "/metrics"): "metrics",
    ("POST", "/v1/tasks"): "create",
    ("GET", "/v1/tasks"): "list_tasks",
    ("POST", "/v1/tasks/batch"): "create_many",
    ("GET", "/v1/tasks/{task_id}"): "get",
    ("DELETE", "/v1/tasks/{task_id}"): "delete",
    ("GET", "/v1/tasks/{task_id}/history"): "history",
    ("POST", "/v1/tasks/{task_id}/retry"): "retry",
    ("GET", "/v1/series"): "series",
    ("GET", "/v1/stats"): "stats",
    ("GET", "/v1/topics"): "list_topics",
    ("GET", "/v1/topics/{topic}"): "get_topic",
    ("PATCH", "/v1/topics/{topic}"): "configure_topic",
    ("POST", "/v1/topics/{topic}/pause"): "pause_topic",
    ("POST", "/v1/topics/{topic}/resume"): "resume_topic",
    ("POST", "/v1/topics/{topic}/purge"): "purge_topic",
    ("GET", "/v1/topics/{topic}/dead-letters"): "dead_letters",
    ("POST", "/v1/topics/{topic}/dead-letters/replay"): "replay_dead_letters",
    ("POST", "/v1/topics/{topic}/dead-letters/delete"): "delete_dead_letters",
    ("POST", "/v1/schedules"): "create_schedule",
    ("GET", "/v1/schedules"): "list_schedules",
    ("GET", "/v1/schedules/{schedule_id}"): "get_schedule",
    ("DELETE", "/v1/schedules/{schedule_id}"): "delete_schedule",
    ("POST", "/v1/schedules/{schedule_id}/pause"): "pause_schedule",
    ("POST", "/v1/schedules/{schedule_id}/resume"): "resume_schedule",
    ("GET", "/v1/nodes"): "nodes",
    ("GET", "/v1/export"): "export_status",
}
"""Each operation of the API (method, OpenAPI path) and the method of :class:`~httpqueue.client.Client`
(and :class:`~httpqueue.client.AsyncClient`) that calls it."""
