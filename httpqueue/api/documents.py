"""How stored things look in the API's answers (the store keeps its own short field names)."""
from __future__ import annotations

import typing as t

from httpqueue.delivery.ssrf import redact_url
from httpqueue.states import PENDING_STATES, State
from httpqueue.store.records import Changed, TaskRecord

NEXT_CURSOR = (
    "Pass as `cursor` for the next page; null when nothing more matches. A page holds `limit` tasks whenever "
    "that many remain; it is shorter (even empty) with a cursor only when it looked at its scan budget (50,000 "
    "stored tasks) without finding enough matches: keep following the cursor.")
"""What ``next_cursor`` promises (listing and dead letters alike)."""

CURSOR_PATTERN = r"^\d{1,3}\.\d{1,6}\.\d{1,15}$"
"""A ``cursor`` argument as pages hand them out (``source.shard.offset``, listing and dead letters alike): longer
numbers are refused as a 400 before they reach the store, whose ``Cursor.parse`` would refuse them as well."""


def task_document(record: TaskRecord) -> dict[str, t.Any]:
    """The original Go httpqueue's query fields exactly (times in whole Unix seconds), then httpqueue's own.

    URLs are shown with their credentials redacted.
    """
    options = record.options or {}
    return {
        "id": record.id, "topic": record.topic, "execute_time": record.execute_ms // 1000,
        "max_retry": record.max_retry, "has_retry": record.has_retry, "callback": redact_url(record.callback),
        "content": record.content, "creat_time": record.created_ms // 1000,
        "state": record.state.value, "attempts": record.attempts, "throttled": record.throttles,
        "execute_time_ms": record.execute_ms, "creat_time_ms": record.created_ms,
        "next_attempt_ms": record.due_ms if record.state in PENDING_STATES else None,
        "finished_time_ms": record.finished_ms,
        "last_error": record.last_error, "last_code": record.last_code,
        **({"options": {k: (redact_url(v) if k == "failure_callback" else v) for k, v in options.items()}}
           if options else {}),
    }


def changed_document(changed: Changed, state: State) -> dict[str, str]:
    """The answer to a delete or requeue: the task, its state now, and its state before."""
    return {"id": changed.task_id, "state": state.value, "previous_state": changed.previous.value}


def empty_counts() -> dict[str, int]:
    return {s.value: 0 for s in State}


def counts_by_topic(counts: t.Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """``{topic: {state: n}}`` from the store's per-(state, topic) counts, every state present."""
    by_topic: dict[str, dict[str, int]] = {}
    for (state, topic), n in counts.items():
        by_topic.setdefault(topic, empty_counts())[state] = n
    return by_topic


def stats_document(counts: t.Mapping[tuple[str, str], int]) -> dict[str, t.Any]:
    """Tasks per state in total and per topic."""
    totals = empty_counts()
    for (state, _), n in counts.items():
        totals[state] = totals.get(state, 0) + n
    return {"totals": totals, "topics": counts_by_topic(counts)}
