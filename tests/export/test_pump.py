"""The exporter's own logic on the suite's real Redis: batching, retry with backoff, partial failures,
claiming a dead exporter's entries, counting drops. The sinks here are in-memory recorders."""
from __future__ import annotations

import time
import typing as t

from httpqueue.connections import StoreClient
from httpqueue.export.events import Event, EventKind
from httpqueue.export.pump import IDLE_WAIT, Backoff, Pump
from httpqueue.export.sinks import SinkKind, SinkUnavailable, WriteResult
from httpqueue.export.stream import GroupReader, GroupStatus
from httpqueue.store.keys import Keys
from tests.export.conftest import add_events, pending_count

GROUP = "export:memory"


class MemorySink:
    """Stores events by id; ``plan`` says what each write does: 'ok', 'down', or a WriteResult maker."""

    kind = SinkKind.CLICKHOUSE
    label = "memory"

    def __init__(self, plan: t.Sequence[t.Any] = ()) -> None:
        self.plan = list(plan)
        self.stored: dict[str, Event] = {}
        self.batches: list[int] = []
        self.sends: dict[str, int] = {}

    def prepare(self) -> None:
        pass

    def write(self, events: t.Sequence[Event]) -> WriteResult:
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "down":
            raise SinkUnavailable("memory sink is down")
        result = step(events) if callable(step) else WriteResult()
        self.batches.append(len(events))
        for e in events:
            self.sends[e.event_id] = self.sends.get(e.event_id, 0) + 1
            if e.event_id not in result.retry and e.event_id not in result.rejected:
                self.stored[e.event_id] = e
        return result

    def close(self) -> None:
        pass


def pump(client: StoreClient, keys: Keys, sink: MemorySink, consumer: str = "a", batch: int = 10,
         claim_idle_ms: int = 60_000) -> Pump:
    return Pump(GroupReader(client, keys, GROUP, consumer, claim_idle_ms), sink, batch=batch)


def drain(p: Pump, steps: int = 50) -> list[float]:
    """Step until the pump is idle twice in a row; the waits it asked for."""
    waits: list[float] = []
    for _ in range(steps):
        waits.append(p.step())
        if waits[-2:] == [IDLE_WAIT, IDLE_WAIT]:
            break
    return waits


def test_batches_every_event_once_and_acknowledges_them(rclient_store: StoreClient, keys: Keys) -> None:
    sink = MemorySink()
    p = pump(rclient_store, keys, sink, batch=8)
    p.reader.ensure_groups()
    ids = add_events(rclient_store, keys, 30)
    drain(p)
    assert len(sink.stored) == 30 and set(sink.sends.values()) == {1}
    assert max(sink.batches) <= 8 and len(sink.batches) >= 4
    assert pending_count(rclient_store, keys, GROUP) == 0
    event = next(iter(sink.stored.values()))
    assert event.kind is EventKind.SUCCEEDED and event.duration_ms == 12.5 and event.callback_host
    assert {e.event_id.split("-", 1)[1] for e in sink.stored.values()} == set(ids)
    assert p.stats.exported == 30 and p.reader.status() == GroupStatus(lag=0, pending=0, dropped=0)


def test_a_sink_outage_keeps_the_batch_and_backs_off(rclient_store: StoreClient, keys: Keys) -> None:
    sink = MemorySink(["down", "down", "down"])
    p = pump(rclient_store, keys, sink)
    p.reader.ensure_groups()
    add_events(rclient_store, keys, 6)
    waits = [p.step() for _ in range(3)]
    assert waits == [0.5, 1.0, 2.0]
    assert sink.stored == {} and pending_count(rclient_store, keys, GROUP) == 6
    assert p.step() == 0.0  # back: the same batch goes, nothing more is read meanwhile
    assert len(sink.stored) == 6 and pending_count(rclient_store, keys, GROUP) == 0
    assert p.backoff.current == 0.0 and p.stats.failures == 3


def test_backoff_doubles_up_to_its_limit() -> None:
    b = Backoff(first=1, most=5)
    assert [b.failed() for _ in range(5)] == [1, 2, 4, 5, 5]
    b.reset()
    assert b.failed() == 1


def test_partial_failures_resend_only_the_refused_events(rclient_store: StoreClient, keys: Keys) -> None:
    def refuse_some(events: t.Sequence[Event]) -> WriteResult:
        return WriteResult(retry={events[0].event_id, events[1].event_id}, rejected={events[2].event_id: "bad"})

    sink = MemorySink([refuse_some])
    p = pump(rclient_store, keys, sink)
    p.reader.ensure_groups()
    add_events(rclient_store, keys, 8)
    assert p.step() == 0.5  # two kept for a retry, after a backoff
    assert len(p.carry) == 2 and pending_count(rclient_store, keys, GROUP) == 2
    assert p.step() == 0.0
    assert sink.batches == [8, 2]
    assert len(sink.stored) == 7 and p.stats.rejected == 1 and p.stats.exported == 7
    assert pending_count(rclient_store, keys, GROUP) == 0


def test_an_unknown_event_kind_is_acknowledged_and_counted(rclient_store: StoreClient, keys: Keys) -> None:
    sink = MemorySink()
    p = pump(rclient_store, keys, sink)
    p.reader.ensure_groups()
    add_events(rclient_store, keys, 2, kind="from_the_future")
    add_events(rclient_store, keys, 3)
    drain(p)
    assert len(sink.stored) == 3 and p.stats.rejected == 2
    assert pending_count(rclient_store, keys, GROUP) == 0


def test_a_dead_exporters_pending_events_are_claimed(rclient_store: StoreClient, keys: Keys) -> None:
    dead = GroupReader(rclient_store, keys, GROUP, "dead", claim_idle_ms=100)
    dead.ensure_groups()
    add_events(rclient_store, keys, 12)
    taken = dead.read_new(100)  # read, then "died" before writing
    assert len(taken) == 12
    sink = MemorySink()
    alive = pump(rclient_store, keys, sink, consumer="alive", claim_idle_ms=100)
    drain(alive)
    assert sink.stored == {}  # not idle long enough yet: still the dead one's
    time.sleep(0.15)
    alive._claimed_at = -1e9  # the next look for stale entries is due now
    drain(alive)
    assert len(sink.stored) == 12 and pending_count(rclient_store, keys, GROUP) == 0


def test_a_restarted_exporter_sends_its_own_pending_events_first(rclient_store: StoreClient, keys: Keys) -> None:
    first = GroupReader(rclient_store, keys, GROUP, "same-name")
    first.ensure_groups()
    add_events(rclient_store, keys, 5)
    assert len(first.read_new(100)) == 5
    sink = MemorySink()
    again = pump(rclient_store, keys, sink, consumer="same-name")
    drain(again)
    assert len(sink.stored) == 5 and pending_count(rclient_store, keys, GROUP) == 0


def test_two_exporters_share_the_events_without_doubles(rclient_store: StoreClient, keys: Keys) -> None:
    sink = MemorySink()
    a, b = pump(rclient_store, keys, sink, "a", batch=4), pump(rclient_store, keys, sink, "b", batch=4)
    a.reader.ensure_groups()
    add_events(rclient_store, keys, 40)
    for _ in range(30):
        a.step(), b.step()
    assert len(sink.stored) == 40 and set(sink.sends.values()) == {1}
    assert a.stats.exported > 0 and b.stats.exported > 0


def test_events_trimmed_before_they_were_read_are_counted_once(rclient_store: StoreClient, keys: Keys) -> None:
    reader = GroupReader(rclient_store, keys, GROUP, "a")
    reader.ensure_groups()
    add_events(rclient_store, keys, 10, shard=0, maxlen=20)
    assert len(reader.read_new(400)) == 10                   # read 10
    add_events(rclient_store, keys, 50, shard=0, maxlen=20)  # 60 added, 20 kept: 30 never read are gone
    other = GroupReader(rclient_store, keys, GROUP, "b")
    assert len(other.read_new(400)) == 20
    assert len(reader.read_new(400)) == 0
    assert reader.status().dropped == 30
    add_events(rclient_store, keys, 5, shard=0, maxlen=20)   # nothing more is lost
    assert len(reader.read_new(400)) == 5 and reader.status().dropped == 30


def test_what_every_sink_acknowledged_is_trimmed_and_nothing_else(rclient_store: StoreClient, keys: Keys) -> None:
    fast = GroupReader(rclient_store, keys, "export:fast", "a")
    slow = GroupReader(rclient_store, keys, "export:slow", "a")
    fast.ensure_groups()
    slow.ensure_groups()
    add_events(rclient_store, keys, 400, shard=0)
    fast.ack(fast.read_new(4 * 400))
    held = slow.read_new(4 * 150)  # 150 handed to the slow sink, not acknowledged yet
    assert len(held) == 150
    fast.trim_acknowledged()
    remaining = rclient_store.xrange(keys.events(0), "-", "+")
    assert remaining[0][0] <= held[0].entry_id  # the slow sink's pending entries stay
    slow.ack(held)
    slow.ack(slow.read_new(4 * 400))
    assert slow.trim_acknowledged() > 0
    assert rclient_store.xlen(keys.events(0)) < 100  # '~': whole nodes only, the newest may stay
    assert slow.status() == GroupStatus(lag=0, pending=0, dropped=0)
    assert fast.status() == GroupStatus(lag=0, pending=0, dropped=0)
