"""The ClickHouse sink against a real clickhouse-server (Debian's 18.16, started on free loopback ports)."""
from __future__ import annotations

import time
import typing as t
import uuid
from pathlib import Path

import pytest

from httpqueue.connections import StoreClient
from httpqueue.export.pump import IDLE_WAIT, Backoff, Pump
from httpqueue.export.sinks.clickhouse import ClickHouseSink
from httpqueue.export.stream import GroupReader
from httpqueue.store.keys import Keys
from tests.export.conftest import add_events, pending_count
from tests.support.clickhouse import LocalClickHouse, server_binary

pytestmark = pytest.mark.skipif(server_binary() is None, reason="clickhouse-server is not installed (.ci/run installs it)")

GROUP = "export:ch"


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[LocalClickHouse]:
    server = LocalClickHouse(Path(tmp_path_factory.mktemp("clickhouse"))).start()
    yield server
    server.stop()


@pytest.fixture
def table() -> str:
    return f"ev_{uuid.uuid4().hex[:10]}"


def make_pump(client: StoreClient, keys: Keys, url: str, consumer: str = "a", batch: int = 20,
              claim_idle_ms: int = 60_000) -> Pump:
    return Pump(GroupReader(client, keys, GROUP, consumer, claim_idle_ms), ClickHouseSink(url, connect_timeout=1),
                batch=batch, backoff=Backoff(first=0.05, most=0.2))


def drain(*pumps: Pump, rounds: int = 100) -> None:
    """Step the pumps (waiting as little as they allow) until all are idle twice in a row."""
    idle = 0
    for _ in range(rounds):
        waits = [p.step() for p in pumps]
        idle = idle + 1 if all(w == IDLE_WAIT for w in waits) and not any(p.carry for p in pumps) else 0
        if idle >= 2:
            return
        time.sleep(min([w for w in waits if w != IDLE_WAIT] or [0]))
    raise AssertionError("the pumps did not finish")


def counts(clickhouse: LocalClickHouse, table: str) -> tuple[int, int, int]:
    """Rows stored, rows after deduplication (FINAL), distinct event ids."""
    [(rows,)] = clickhouse.query(f"SELECT count() FROM {table}")
    [(final,)] = clickhouse.query(f"SELECT count() FROM {table} FINAL")
    [(ids,)] = clickhouse.query(f"SELECT uniqExact(event_id) FROM {table}")
    return rows, final, ids


def test_the_table_is_created_if_missing_and_filled_in_batches(clickhouse: LocalClickHouse, table: str,
                                                                rclient_store: StoreClient, keys: Keys) -> None:
    pump = make_pump(rclient_store, keys, f"{clickhouse.url}?table={table}", batch=10)
    pump.reader.ensure_groups()
    add_events(rclient_store, keys, 45)
    drain(pump)
    [(engine, partition, order)] = clickhouse.query(
        "SELECT engine, partition_key, sorting_key FROM system.tables WHERE name = %(t)s", {"t": table})
    assert engine == "ReplacingMergeTree"
    assert partition == "toYYYYMMDD(time)" and order == "topic, time, event_id"
    assert counts(clickhouse, table) == (45, 45, 45)
    [(late, hosts)] = clickhouse.query(f"SELECT max(lateness_ms), any(callback_host) FROM {table}")
    assert late == 44 and hosts == "receiver.example"
    assert pending_count(rclient_store, keys, GROUP) == 0


def test_a_server_stopped_and_restarted_mid_export_loses_and_doubles_nothing(
        clickhouse: LocalClickHouse, table: str, rclient_store: StoreClient, keys: Keys) -> None:
    pump = make_pump(rclient_store, keys, f"{clickhouse.url}?table={table}")
    pump.reader.ensure_groups()
    add_events(rclient_store, keys, 60)
    assert pump.step() == 0.0  # one batch in
    clickhouse.stop(grace=0)   # killed mid-export
    add_events(rclient_store, keys, 40)
    waits = [pump.step() for _ in range(3)]
    assert waits == [0.05, 0.1, 0.2] and len(pump.carry) == 20  # the batch waits, nothing more is read
    clickhouse.start()
    drain(pump)
    assert counts(clickhouse, table)[1:] == (100, 100)
    assert pending_count(rclient_store, keys, GROUP) == 0 and pump.stats.failures == 3


def test_an_exporter_dying_after_its_insert_makes_a_duplicate_that_final_removes(
        clickhouse: LocalClickHouse, table: str, rclient_store: StoreClient, keys: Keys) -> None:
    url = f"{clickhouse.url}?table={table}"
    dying = GroupReader(rclient_store, keys, GROUP, "dying", claim_idle_ms=50)
    dying.ensure_groups()
    add_events(rclient_store, keys, 30)
    taken = dying.read_new(100)
    ClickHouseSink(url).write([e.event for e in taken if e.event])  # stored, then died before XACK
    time.sleep(0.1)
    heir = make_pump(rclient_store, keys, url, "heir", claim_idle_ms=50)
    drain(heir)
    rows, final, ids = counts(clickhouse, table)
    assert rows == 60 and final == 30 and ids == 30  # sent twice, counted once
    assert pending_count(rclient_store, keys, GROUP) == 0


def test_two_exporters_share_the_work(clickhouse: LocalClickHouse, table: str, rclient_store: StoreClient,
                                      keys: Keys) -> None:
    url = f"{clickhouse.url}?table={table}"
    a, b = make_pump(rclient_store, keys, url, "a", batch=8), make_pump(rclient_store, keys, url, "b", batch=8)
    a.reader.ensure_groups()
    add_events(rclient_store, keys, 80)
    drain(a, b)
    assert counts(clickhouse, table) == (80, 80, 80)
    assert a.stats.exported > 0 and b.stats.exported > 0 and a.stats.exported + b.stats.exported == 80


def test_retention_drops_day_partitions_older_than_retention_days(clickhouse: LocalClickHouse, table: str,
                                                                  rclient_store: StoreClient, keys: Keys) -> None:
    old = ClickHouseSink(f"{clickhouse.url}?table={table}")
    reader = GroupReader(rclient_store, keys, GROUP, "a")
    reader.ensure_groups()
    add_events(rclient_store, keys, 5)  # their times are in November 2025
    old.write([e.event for e in reader.read_new(10) if e.event])
    assert counts(clickhouse, table)[0] == 5
    keeping = ClickHouseSink(f"{clickhouse.url}?table={table}&retention_days=30")
    add_events(rclient_store, keys, 1)
    keeping.write([e.event for e in reader.read_new(10) if e.event])  # the sweep runs after the insert
    assert counts(clickhouse, table)[0] == 0
