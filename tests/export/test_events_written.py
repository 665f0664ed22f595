"""The store's scripts write lifecycle events to the shard's stream, in the same script run, only while export
is on; on a standalone Redis and on a Redis Cluster (each script touches one slot)."""
from __future__ import annotations

import typing as t

import pytest

from httpqueue.context import Context
from httpqueue.export import switch
from httpqueue.export.events import Event, EventKind, parse
from httpqueue.export.pump import Pump
from httpqueue.export.stream import GroupReader, GroupStatus
from httpqueue.states import Outcome
from tests.support.cluster import STORE_KINDS
from tests.support.store import HOUR_MS, NOWHERE, delivering, parked, queued

NOW = 1_764_130_000_000


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def exporting(make_context: t.Callable[..., Context], bound: int, **overrides: t.Any) -> Context:
    """A fresh context with event writing on (as a process started with ``export_max_events`` turns it on)."""
    ctx = make_context(**overrides)
    switch.enable(ctx.store.redis, ctx.keys, bound)
    return ctx


def written(ctx: Context) -> list[Event]:
    """Every event in every shard's stream, oldest first."""
    found: list[Event] = []
    for shard in range(ctx.keys.shards):
        found += [parse(shard, entry_id, fields)
                  for entry_id, fields in ctx.store.redis.xrange(ctx.keys.events(shard), "-", "+")]
    return sorted(found, key=lambda e: (e.time_ms, e.event_id))


def kinds(events: t.Sequence[Event], task_id: str) -> list[EventKind]:
    return [e.kind for e in events if e.task_id == task_id]


def test_no_event_is_written_while_export_is_off(make_context: t.Callable[..., Context]) -> None:
    ctx = make_context()
    dispatch = delivering(ctx.store, NOW)
    ctx.store.settle(dispatch.task_id, dispatch.gen, NOW + 5, Outcome.SUCCEEDED)
    assert written(ctx) == []
    assert not any(ctx.store.redis.exists(ctx.keys.events(s)) for s in range(ctx.keys.shards))


def test_every_state_change_writes_its_event(make_context: t.Callable[..., Context]) -> None:
    ctx = exporting(make_context, 1000)
    store = ctx.store
    assert switch.bounds(store.redis, ctx.keys) == [1000] * ctx.keys.shards
    # created (queued at once), claimed, retrying, promoted, claimed, succeeded
    first = queued(store, NOW, topic="orders", max_retry=3)
    assert store.claim(first.task_id, first.gen, NOW + 1, store.lease_ms)
    attempt = {"event": "attempt", "t": NOW + 1, "n": 1, "outcome": "retrying", "code": 500, "ms": 12.5,
               "error": "HTTP 500", "late_ms": 1, "next": NOW + 1000}
    assert store.settle(first.task_id, first.gen, NOW + 20, Outcome.RETRYING, due_ms=NOW + 1000, code=500,
                        error="HTTP 500", event=attempt)
    [again] = [d for d in store.promote(ctx.keys.shard_of(first.task_id), NOW + 1000) if d.task_id == first.task_id]
    assert store.claim(first.task_id, again.gen, NOW + 1001, store.lease_ms)
    done = {**attempt, "n": 2, "outcome": "succeeded", "code": None, "error": None, "ms": 3.25, "late_ms": 2}
    assert store.settle(first.task_id, again.gen, NOW + 1010, Outcome.SUCCEEDED, event=done)
    # created (parked), deleted; created, requeued
    gone = parked(store, NOW, topic="orders")
    store.delete(gone, NOW + 2)
    later = parked(store, NOW, topic="orders")
    store.requeue(later, NOW + 3)
    events = written(ctx)
    assert kinds(events, first.task_id) == [EventKind.CREATED, EventKind.CLAIMED, EventKind.RETRYING,
                                            EventKind.PROMOTED, EventKind.CLAIMED, EventKind.SUCCEEDED]
    assert kinds(events, gone) == [EventKind.CREATED, EventKind.DELETED]
    assert kinds(events, later) == [EventKind.CREATED, EventKind.REQUEUED]
    retry = next(e for e in events if e.kind is EventKind.RETRYING)
    assert (retry.attempt, retry.code, retry.duration_ms, retry.lateness_ms, retry.error, retry.next_ms) == (
        1, 500, 12.5, 1, "HTTP 500", NOW + 1000)
    assert retry.callback_host == NOWHERE.split("://")[1].split("/")[0] and retry.topic == "orders"
    success = events[[e.kind for e in events].index(EventKind.SUCCEEDED)]
    assert (success.attempt, success.code, success.duration_ms, success.error, success.next_ms) == (
        2, None, 3.25, None, None)
    created = next(e for e in events if e.task_id == gone)
    assert created.next_ms == NOW + HOUR_MS and created.time_ms == NOW
    assert len({e.event_id for e in events}) == len(events)


def test_the_stream_is_bounded_and_what_was_trimmed_unread_is_counted(
        make_context: t.Callable[..., Context]) -> None:
    ctx = exporting(make_context, 50, shards=1)
    reader = GroupReader(ctx.store.redis, ctx.keys, "export:test", "a")
    reader.ensure_groups()
    for n in range(400):
        parked(ctx.store, NOW + n)
    length = int(ctx.store.redis.xlen(ctx.keys.events(0)))
    assert 50 <= length < 400  # MAXLEN ~: trimmed by whole macro nodes, never below the bound
    read = reader.read_new(1000)
    assert len(read) == length and reader.status().dropped == 400 - length


def test_export_off_stops_the_writes(make_context: t.Callable[..., Context]) -> None:
    ctx = exporting(make_context, 100)
    parked(ctx.store, NOW)
    switch.disable(ctx.store.redis, ctx.keys)
    parked(ctx.store, NOW)
    assert len(written(ctx)) == 1




def test_the_exporter_reads_acknowledges_and_trims_every_shard(make_context: t.Callable[..., Context]) -> None:
    from tests.export.test_pump import MemorySink, drain

    ctx = exporting(make_context, 1000)
    for n in range(40):
        delivering(ctx.store, NOW + n)
    sink = MemorySink()
    pump = Pump(GroupReader(ctx.store.redis, ctx.keys, "export:memory", "a"), sink, batch=16)
    drain(pump)
    assert len(sink.stored) == 80 and set(sink.sends.values()) == {1}  # created and claimed, once each
    assert {e.kind for e in sink.stored.values()} == {EventKind.CREATED, EventKind.CLAIMED}
    pump.reader.trim_acknowledged()
    assert pump.reader.status() == GroupStatus(lag=0, pending=0, dropped=0)
