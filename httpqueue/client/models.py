"""What the client sends (:class:`TaskSpec`, :class:`Options`) and what it returns (the other dataclasses).

Results keep the API's field names, so the API reference reads for both;
fields the API adds later are ignored rather than breaking older clients.
Times are what the API gives (Unix seconds or milliseconds, as named); a
few properties turn them into :class:`datetime.datetime`.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import typing as t

from httpqueue.states import State

__all__ = [
    "BatchResult", "Changed", "Circuit", "Created", "Event", "ExportConsumer", "ExportSink", "ExportStatus",
    "HttpMethod", "Minute", "Node", "Options", "Readiness",
    "RetryPolicy", "Schedule", "State", "Stats", "Status", "SuccessRule", "Task", "TaskPage", "TaskSpec", "Topic",
]

When = t.Union[float, int, datetime.datetime, str]
"""An absolute time: Unix seconds, an aware datetime, or an RFC 3339 string with an offset."""


class HttpMethod(enum.StrEnum):
    """The method of a callback (GET and DELETE carry no body)."""

    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    GET = "GET"
    DELETE = "DELETE"


class SuccessRule(enum.StrEnum):
    """When a callback counts as done: the original Go httpqueue's ``{"code": 100}`` body, or any 2xx status."""

    CODE100 = "code100"
    HTTP_2XX = "2xx"


def _known(cls: type[t.Any], data: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """The entries of ``data`` that are fields of ``cls``: new API fields do not break old clients."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _drop_none(data: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {k: v for k, v in data.items() if v is not None}


def _when(value: When) -> float | str:
    """``execute_at`` as the API reads it; a naive datetime is refused here, as the API refuses it."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError("execute_at needs a time zone (a naive datetime is ambiguous)")
        return value.timestamp()
    return value


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How the API retries a failed callback (unset fields take the API's defaults)."""

    base: float | None = None
    factor: float | None = None
    max_interval: float | None = None
    max_duration: float | None = None
    jitter: bool | None = None

    def to_json(self) -> dict[str, t.Any]:
        return _drop_none(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class Options:
    """Delivery options of a task; unset fields take the API's defaults."""

    method: HttpMethod | None = None
    headers: t.Mapping[str, str] | None = None
    timeout: float | None = None
    success: SuccessRule | None = None
    retry_policy: RetryPolicy | None = None
    failure_callback: str | None = None

    def to_json(self) -> dict[str, t.Any]:
        return _drop_none({
            "method": self.method.value if self.method else None,
            "headers": dict(self.headers) if self.headers is not None else None,
            "timeout": self.timeout, "success": self.success.value if self.success else None,
            "retry_policy": self.retry_policy.to_json() if self.retry_policy else None,
            "failure_callback": self.failure_callback})


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A task to create: POST ``content`` to ``callback`` after ``delay`` seconds or at ``execute_at``.

    Give one of ``delay`` and ``execute_at`` (a schedule's task template has
    neither: each tick sets the time). ``id`` makes the create idempotent.
    """

    topic: str
    callback: str
    content: t.Any = ""
    delay: float | None = None
    execute_at: When | None = None
    retry: int = 0
    id: str | None = None
    options: Options = dataclasses.field(default_factory=Options)

    def to_json(self) -> dict[str, t.Any]:
        """The request body of ``/create``, ``/v1/tasks`` or one batch item."""
        return {"topic": self.topic, "callback": self.callback, "content": self.content,
                **_drop_none({"delay": self.delay,
                              "execute_at": _when(self.execute_at) if self.execute_at is not None else None,
                              "id": self.id}),
                **({"retry": self.retry} if self.retry else {}), **self.options.to_json()}

    def with_id(self, task_id: str) -> TaskSpec:
        return dataclasses.replace(self, id=task_id)


@dataclasses.dataclass(frozen=True)
class Task:
    """A task as the API shows it: the original Go httpqueue's fields, then httpqueue's own."""

    id: str
    topic: str
    state: State
    callback: str
    content: t.Any = None
    execute_time: int = 0
    max_retry: int = 0
    has_retry: int = 0
    creat_time: int = 0
    attempts: int = 0
    throttled: int = 0
    execute_time_ms: int = 0
    creat_time_ms: int = 0
    next_attempt_ms: int | None = None
    finished_time_ms: int | None = None
    last_error: str | None = None
    last_code: int | None = None
    options: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    replayed: bool = False
    """True when this create repeated an earlier one (same id or Idempotency-Key): no second task was made."""

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Task:
        return cls(**{**_known(cls, data), "state": State(data["state"])})

    @property
    def due(self) -> datetime.datetime:
        """When the task was first due (UTC)."""
        return datetime.datetime.fromtimestamp(self.execute_time_ms / 1000, datetime.timezone.utc)

    @property
    def created(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.creat_time_ms / 1000, datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Created:
    """The original ``/create``'s answer: the id, and whether an idempotent create was repeated."""

    id: str
    replayed: bool = False

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Created:
        return cls(**_known(cls, data))


@dataclasses.dataclass(frozen=True)
class Changed:
    """The answer to a delete or retry: the task's state now and before."""

    id: str
    state: State
    previous_state: State

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Changed:
        return cls(data["id"], State(data["state"]), State(data["previous_state"]))


@dataclasses.dataclass(frozen=True)
class TaskPage:
    """One page of a listing; ``next_cursor`` is ``None`` when nothing more matches.

    A page may be short (even empty) with a cursor: the API looked at its scan
    budget without finding enough matches. The ``iter_*`` methods follow the
    cursor for you.
    """

    tasks: list[Task]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> TaskPage:
        return cls([Task.from_json(d) for d in data.get("tasks", [])], data.get("next_cursor"))


@dataclasses.dataclass(frozen=True)
class Event:
    """One entry of a task's history: ``name`` (created, promoted, attempt, ...), its time, and its details."""

    name: str
    at_ms: int
    data: dict[str, t.Any]

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Event:
        return cls(str(data.get("event", "")), int(data.get("t", 0)),
                   {k: v for k, v in data.items() if k not in ("event", "t")})


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """One item of a batch create: its task ``id``, or the ``error`` and ``fields`` that refused it."""

    id: str | None = None
    replayed: bool = False
    error: str | None = None
    fields: dict[str, t.Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> BatchResult:
        return cls(**_known(cls, data))


@dataclasses.dataclass(frozen=True)
class Circuit:
    """A callback host's circuit breaker within a topic."""

    host: str
    failures: int = 0
    open_until_ms: int | None = None
    openings: int = 0
    state: str = "closed"

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Circuit:
        return cls(**_known(cls, data))


@dataclasses.dataclass(frozen=True)
class Topic:
    """A topic's settings, counts per state and circuits."""

    topic: str
    paused: bool = False
    rate_limit: float | None = None
    concurrency: int | None = None
    failure_callback: str | None = None
    running: int = 0
    circuits: list[Circuit] = dataclasses.field(default_factory=list)
    counts: dict[State, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Topic:
        return cls(**{**_known(cls, data), "circuits": [Circuit.from_json(c) for c in data.get("circuits", [])],
                      "counts": _counts(data.get("counts", {}))})


def _counts(data: t.Mapping[str, int]) -> dict[State, int]:
    return {State(state): int(n) for state, n in data.items() if state in State.__members__.values()}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A recurring task: every tick of ``cron`` (in ``timezone``) creates the task ``task``."""

    id: str
    cron: str
    timezone: str = "UTC"
    task: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    paused: bool = False
    created_ms: int = 0
    next_tick_ms: int | None = None
    last_tick_ms: int | None = None
    last_task_id: str | None = None

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Schedule:
        return cls(**_known(cls, data))


@dataclasses.dataclass(frozen=True)
class Stats:
    """Tasks per state, in total and per topic."""

    totals: dict[State, int]
    topics: dict[str, dict[State, int]]

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Stats:
        return cls(_counts(data.get("totals", {})),
                   {name: _counts(counts) for name, counts in data.get("topics", {}).items()})


@dataclasses.dataclass(frozen=True)
class Readiness:
    """``/ready``: whether a task created now will fire, and if not, why (``problems``)."""

    ready: bool
    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    workers: t.Any = None

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Readiness:
        problems = data.get("problems") or ([data["error"]] if data.get("error") else [])
        return cls(data.get("status") == "ready", list(problems), list(data.get("warnings", [])), data.get("workers"))


@dataclasses.dataclass(frozen=True)
class Status:
    """``/status``, what the dashboard shows first: is a worker running, how late are tasks, is Redis persistent."""

    ready: bool
    workers: t.Any = None
    persistence: t.Any = None
    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    overdue: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    """``tasks`` past due and not yet sent, ``oldest_due_ms``, ``oldest_seconds``."""

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Status:
        return cls(**_known(cls, data))


@dataclasses.dataclass(frozen=True)
class Minute:
    """One minute of ``/v1/series``: attempts by outcome and firing lateness (upper bounds of histogram buckets)."""

    at: int
    """The minute's start, Unix seconds (the API's ``t``)."""
    succeeded: int = 0
    retrying: int = 0
    throttled: int = 0
    failed: int = 0
    late_mean_ms: float | None = None
    late_p50_ms: float | None = None
    late_p99_ms: float | None = None

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Minute:
        return cls(**{**_known(cls, data), "at": int(data["t"])})


@dataclasses.dataclass(frozen=True)
class Node:
    """A live API process or worker of the deployment (``GET /v1/nodes``).

    ``role`` is ``api`` or ``worker``; ``incarnation`` changes on every start,
    so a restarted worker under the same ``name`` is a new node. ``load`` is
    requests per second for an API process, attempts in flight for a worker.
    Times are Unix seconds. Fields the API does not give stay ``None``;
    ``raw`` holds the whole entry.
    """

    role: str | None = None
    name: str | None = None
    incarnation: str | None = None
    host: str | None = None
    pid: int | None = None
    version: str | None = None
    started: float | None = None
    last_seen: float | None = None
    load: float | None = None
    raw: dict[str, t.Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> Node:
        return cls(**{**_known(cls, data), "raw": dict(data)})


@dataclasses.dataclass(frozen=True)
class ExportConsumer:
    """One ``httpqueue export`` process reading for a sink: what it holds unacknowledged, how long it has been quiet."""

    name: str
    pending: int = 0
    idle_seconds: float = 0.0

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> ExportConsumer:
        return cls(**_known(cls, data))


@dataclasses.dataclass(frozen=True)
class ExportSink:
    """One sink's progress (``GET /v1/export``): events not read yet (``lag``), read and not acknowledged
    (``pending``), and lost to the streams' bound before the sink got them (``dropped``)."""

    sink: str
    group: str = ""
    lag: int = 0
    pending: int = 0
    dropped: int = 0
    last_delivered_id: str | None = None
    last_delivered_at: float | None = None
    """When the newest entry handed to the sink's exporters was written, Unix seconds."""
    last_delivered_age: float | None = None
    last_success_at: float | None = None
    """When an exporter last acknowledged events of the sink (it took them), Unix seconds."""
    last_success_age: float | None = None
    consumers: list[ExportConsumer] = dataclasses.field(default_factory=list)

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> ExportSink:
        known = _known(cls, data)
        known["consumers"] = [ExportConsumer.from_json(c) for c in data.get("consumers") or []]
        return cls(**known)


@dataclasses.dataclass(frozen=True)
class ExportStatus:
    """``GET /v1/export``: whether events are written, each shard stream's bound, and every sink's progress."""

    enabled: bool
    max_events: int = 0
    shards: int = 0
    sinks: list[ExportSink] = dataclasses.field(default_factory=list)

    @classmethod
    def from_json(cls, data: t.Mapping[str, t.Any]) -> ExportStatus:
        known = _known(cls, data)
        known["sinks"] = [ExportSink.from_json(s) for s in data.get("sinks") or []]
        return cls(**known)
