"""The exported event: one entry of a shard's event stream, parsed, with its stable id.

The store's Lua scripts write each lifecycle event as a stream entry with
short fields (``k`` kind, ``id`` task, ``tp`` topic, ``t`` time in ms, and for
attempts ``n``, ``oc``, ``code``, ``ms``, ``late``, ``err``, ``next``, ``h``;
see ``emit_event`` in ``store/lua/common.lua``). Here they become an
:class:`Event` whose :attr:`Event.event_id` is ``<shard>-<entry id>``: the
entry id never changes once written, so a batch sent twice (an exporter that
died before its acknowledgement, a claimed pending entry) carries the same
ids, and every sink stores it once.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import typing as t


class EventKind(enum.StrEnum):
    """What happened to a task; the ``k`` field of a stream entry."""

    CREATED = "created"
    PROMOTED = "promoted"          # the timer handed it to the broker (a new generation)
    CLAIMED = "claimed"            # an attempt started
    SUCCEEDED = "succeeded"        # attempt succeeded: final
    RETRYING = "retrying"          # attempt failed, a retry is scheduled
    THROTTLED = "throttled"        # the receiver answered code 101: parked, not a failure
    DEFERRED = "deferred"          # not attempted: topic rate/concurrency limit or open circuit
    HELD = "held"                  # not attempted: the topic is paused
    FAILED = "failed"              # failed for good: a dead letter
    LEASE_EXPIRED = "lease_expired"  # its worker died or its message was lost: handed out again
    DELETED = "deleted"
    REQUEUED = "requeued"          # "retry now" or a dead-letter replay


ATTEMPT_KINDS = frozenset({EventKind.SUCCEEDED, EventKind.RETRYING, EventKind.THROTTLED, EventKind.FAILED})
"""Kinds that may carry an attempt's outcome, code, duration and lateness (a ``failed`` may also be a lost lease)."""


@dataclasses.dataclass(frozen=True)
class Event:
    """One lifecycle event, as every sink stores it (optional fields are ``None`` when the kind has none)."""

    event_id: str
    shard: int
    time_ms: int
    kind: EventKind
    task_id: str
    topic: str
    attempt: int | None = None
    code: int | None = None
    duration_ms: float | None = None
    lateness_ms: int | None = None
    error: str | None = None
    next_ms: int | None = None
    callback_host: str | None = None

    @property
    def time(self) -> dt.datetime:
        """The event's time as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.time_ms / 1000, tz=dt.timezone.utc)

    @property
    def attempted(self) -> bool:
        """Whether this event reports a callback that was sent (it has a duration)."""
        return self.duration_ms is not None


def event_id(shard: int, entry_id: str) -> str:
    """The stable id of the stream entry ``entry_id`` of ``shard``."""
    return f"{shard}-{entry_id}"


def parse(shard: int, entry_id: str, fields: t.Mapping[str, str]) -> Event:
    """The :class:`Event` of one stream entry; an unknown kind raises ``ValueError`` (a newer writer)."""
    return Event(
        event_id=event_id(shard, entry_id), shard=shard, time_ms=int(fields.get("t") or entry_id.split("-")[0]),
        kind=EventKind(fields["k"]), task_id=fields.get("id", ""), topic=fields.get("tp", ""),
        attempt=_int(fields.get("n")), code=_int(fields.get("code")), duration_ms=_float(fields.get("ms")),
        lateness_ms=_int(fields.get("late")), error=fields.get("err") or None, next_ms=_int(fields.get("next")),
        callback_host=fields.get("h") or None,
    )


def _int(raw: str | None) -> int | None:
    return int(float(raw)) if raw else None


def _float(raw: str | None) -> float | None:
    return float(raw) if raw else None
