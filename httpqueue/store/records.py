"""The task store's records: what goes in (a new task, a settlement) and what comes out.

Small immutable dataclasses, read by attribute, never by position. They hold no
Redis and no HTTP: the API shapes them into answers (``api/documents.py``),
the worker into callbacks.
"""
from __future__ import annotations

import base64
import dataclasses
import secrets
import typing as t

import typing_extensions

from httpqueue import jsoncodec
from httpqueue.states import Outcome, State

#: Short hash field names (memory per task matters at millions of tasks) and their meaning.
FIELDS = {
    "tp": "topic", "cb": "callback", "ct": "content (JSON text)", "ex": "first execute time",
    "due": "current due time", "mr": "max_retry", "hr": "has_retry", "cr": "creation time",
    "st": "state", "gen": "generation of the current message", "at": "attempts started",
    "le": "last error", "lc": "last response code", "th": "code-101 answers", "fin": "finish time",
    "lost": "attempts lost by dead workers", "opt": "delivery options (JSON)",
    "sl": "reserved rate-limit slot (ms)", "fnd": "failure notification sent",
    "to": "the task's own callback timeout (ms)", "fp": "fingerprint of the create request (idempotency)",
    "rq": "re-issues of a queued task whose message was not taken within its lease (reclaim's backoff)",
    "ow": "incarnation of the worker that claimed the current attempt (released when its heartbeat stops)",
}

_C = t.TypeVar("_C")


@typing_extensions.dataclass_transform(frozen_default=True)
def value_record(cls: type[_C]) -> type[_C]:
    """A dataclass that is frozen to mypy and to its readers, and at run time a slotted one without the freeze.

    A frozen dataclass sets each field through ``object.__setattr__``: four
    times the cost of a plain one (1.2 us against 0.3 us for a
    :class:`NewTask`), and a batch of 1,000 creates builds four records a
    task, about a tenth of the API's CPU (docs/benchmarks.rst, "Batches: the
    records"). The records a create makes take this instead; mypy still
    refuses any assignment to their fields (``dataclass_transform``'s
    ``frozen_default``), which is where the immutability is checked. Unlike a
    frozen dataclass they are not hashable.
    """
    return dataclasses.dataclass(slots=True)(cls)


def new_id() -> str:
    """An opaque id, unique across nodes without coordination: 104 random bits, URL-safe, 18 characters.

    18 characters, not 22: the task key ``hq:{N}:t:<id>`` then fits the
    allocator's 32-byte class instead of 48, 16 bytes less per pending task
    (docs/benchmarks.rst, "Where the bytes go"). 104 bits keep collisions
    out of reach: a billion ids collide with odds of about 1 in 10^13, and a
    collision is refused by the create script, never overwritten.
    """
    return new_ids(1)[0]


def new_ids(count: int) -> list[str]:
    """``count`` ids of :func:`new_id`'s kind (what ``secrets.token_urlsafe(13)`` gives), from one read of the
    system's random source: a batch of a thousand creates made a thousand ``getrandom`` calls, a third of
    the cost of its ids."""
    raw = secrets.token_bytes(13 * count)
    encode = base64.urlsafe_b64encode
    return [encode(raw[at:at + 13]).rstrip(b"=").decode() for at in range(0, 13 * count, 13)]



@value_record
class NewTask:
    """A validated create request, before it has an id."""

    topic: str
    callback: str
    content: t.Any
    due_ms: int
    max_retry: int
    options: t.Mapping[str, t.Any] | None = None
    task_id: str | None = None
    fingerprint: str | None = None
    """Digest of the create request; a second create with the same id and fingerprint is a replay."""


@value_record
class Dispatch:
    """A task to hand to Celery: its id, message generation, due time, retries so far, topic."""

    task_id: str
    gen: int
    due_ms: int
    retries: int = 0
    topic: str = ""


@value_record
class Created:
    """What ``create`` did: the new id, and the message to publish now, if any."""

    task_id: str
    dispatch: Dispatch | None
    replayed: bool = False

    def record(self, task: NewTask, now_ms: int) -> TaskRecord:
        """The task as ``create.lua`` just stored it (not for a replay, whose stored task is older)."""
        return TaskRecord(
            id=self.task_id, topic=task.topic, callback=task.callback, content=task.content,
            state=State.QUEUED if self.dispatch is not None else State.SCHEDULED, execute_ms=task.due_ms,
            due_ms=task.due_ms, created_ms=now_ms, max_retry=task.max_retry, has_retry=0, attempts=0,
            gen=self.dispatch.gen if self.dispatch is not None else 0, options=dict(task.options or {}))


@value_record
class TaskRecord:
    """A task as stored, with the field names of the API."""

    id: str
    topic: str
    callback: str
    content: t.Any
    state: State
    execute_ms: int
    due_ms: int
    created_ms: int
    max_retry: int
    has_retry: int
    attempts: int
    gen: int
    throttles: int = 0
    last_error: str | None = None
    last_code: int | None = None
    finished_ms: int | None = None
    options: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)
    slot_ms: int | None = None

    @classmethod
    def from_hash(cls, task_id: str, h: t.Mapping[str, str]) -> TaskRecord:
        def num(name: str, default: int = 0) -> int:
            return int(float(h.get(name, default)))
        return cls(
            id=task_id, topic=h["tp"], callback=h["cb"], content=jsoncodec.loads(h["ct"]), state=State(h["st"]),
            execute_ms=num("ex", num("due")), due_ms=num("due"), created_ms=num("cr"), max_retry=num("mr"),
            has_retry=num("hr"), attempts=num("at"), gen=num("gen"), throttles=num("th"),
            last_error=h.get("le"), last_code=int(h["lc"]) if h.get("lc") else None,
            finished_ms=num("fin") if "fin" in h else None, options=jsoncodec.loads(h.get("opt") or "{}"),
            slot_ms=num("sl") if h.get("sl") else None,
        )


@dataclasses.dataclass(frozen=True)
class Settlement:
    """The outcome of one attempt, as ``settle.lua`` records it."""

    task_id: str
    gen: int
    now_ms: int
    outcome: Outcome
    due_ms: int = 0
    code: int | None = None
    error: str | None = None
    event: t.Mapping[str, t.Any] | None = None
    slot_ms: int | None = None


@dataclasses.dataclass(frozen=True)
class Changed:
    """A task changed by hand: its state before, and its topic."""

    task_id: str
    previous: State
    topic: str


@dataclasses.dataclass(frozen=True)
class Page:
    tasks: list[TaskRecord]
    cursor: str | None


CURSOR_OFFSET_MAX = 2**53
"""Largest offset a cursor may carry: the listing script reads it as a Lua number (a double), exact up to here,
and an hour list's positions (hour * 10^8 + index) stay far below it."""


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Position of a listing: which source set, which shard, which offset."""

    source: int
    shard: int
    offset: int

    @classmethod
    def parse(cls, text: str) -> Cursor:
        try:
            source, shard, offset = (int(p) for p in text.split("."))
        except ValueError:
            raise ValueError(f"invalid cursor {text!r}") from None
        if min(source, shard, offset) < 0 or offset > CURSOR_OFFSET_MAX:
            raise ValueError(f"invalid cursor {text!r}")
        return cls(source, shard, offset)

    def format(self) -> str:
        return f"{self.source}.{self.shard}.{self.offset}"

    def next(self, offset: int, shards: int) -> Cursor:
        """Where to continue after a page that ended at ``offset`` (-1: this set is exhausted)."""
        if offset >= 0:
            return Cursor(self.source, self.shard, offset)
        if self.shard + 1 < shards:
            return Cursor(self.source, self.shard + 1, 0)
        return Cursor(self.source + 1, 0, 0)


