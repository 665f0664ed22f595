"""The export's progress seen from the API (``GET /v1/export``, ``/metrics``), on events written by real store
calls and a consumer group a real reader made; on a standalone Redis and on a Redis Cluster."""
from __future__ import annotations

import re
import time
import types
import typing as t

import pytest

from httpqueue.api.app import create_app
from httpqueue.connections import redis_client
from httpqueue.context import Context
from httpqueue.embedded import free_port
from httpqueue.export import status, switch
from httpqueue.export.stream import GroupReader, GroupStatus
from httpqueue.metrics import ExportCollector
from httpqueue.store.keys import Keys
from tests.support.cluster import STORE_KINDS
from tests.support.store import fresh_prefix, parked

NOW = 1_764_130_000_000


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def metric(text: str, name: str, sink: str) -> float:
    found = re.search(rf'^{name}{{sink="{re.escape(sink)}"}} (\S+)$', text, re.M)
    assert found, f"{name} for {sink} missing from /metrics"
    return float(found.group(1))


def test_lag_pending_and_drops_show_in_the_status_the_endpoint_and_the_metrics(
        make_context: t.Callable[..., Context]) -> None:
    ctx = make_context(shards=2)
    client = ctx.store.redis
    switch.enable(client, ctx.keys, 50)
    reader = GroupReader(client, ctx.keys, "export:memory", "exporter-a")
    reader.ensure_groups()
    for n in range(300):  # one "created" event each; the bound trims most of them before any read
        parked(ctx.store, NOW + n)
    kept = sum(int(client.xlen(ctx.keys.events(s))) for s in range(ctx.keys.shards))
    read = reader.read_new(1000)
    assert len(read) == kept < 300
    before_ack = time.time()
    reader.ack(read[:10])
    for n in range(5):  # written after the read: the lag
        parked(ctx.store, NOW + 1000 + n)
    expected = GroupStatus(lag=5, pending=kept - 10, dropped=300 - kept)

    found = status.read(client, ctx.keys)
    assert (found.enabled, found.max_events, found.shards) == (True, 50, 2)
    [sink] = found.sinks
    assert (sink.sink, sink.group, sink.counts) == ("memory", "export:memory", expected)
    assert sink.counts == reader.status()  # the exporter's own count, the same
    assert [(c.name, c.pending) for c in sink.consumers] == [("exporter-a", kept - 10)]
    assert sink.last_acked_ms is not None and before_ack - 1 <= sink.last_acked_ms / 1000 <= time.time() + 1
    assert sink.last_delivered_id == max(read, key=lambda e: tuple(map(int, e.entry_id.split("-")))).entry_id

    api = create_app(ctx.settings).test_client()
    body = api.get("/v1/export").get_json()
    assert (body["enabled"], body["max_events"], body["shards"]) == (True, 50, 2)
    [doc] = body["sinks"]
    assert (doc["sink"], doc["lag"], doc["pending"], doc["dropped"]) == ("memory", 5, kept - 10, 300 - kept)
    assert doc["last_delivered_id"] == sink.last_delivered_id and doc["last_delivered_at"] is not None
    assert doc["consumers"][0]["name"] == "exporter-a" and doc["consumers"][0]["idle_seconds"] >= 0
    assert doc["last_success_at"] == sink.last_acked_ms / 1000 and 0 <= doc["last_success_age"] < 60

    text = api.get("/metrics").get_data(as_text=True)
    assert metric(text, "httpqueue_export_lag_events", "memory") == 5
    assert metric(text, "httpqueue_export_pending_events", "memory") == kept - 10
    assert metric(text, "httpqueue_export_dropped_events", "memory") == 300 - kept
    assert metric(text, "httpqueue_export_last_success_seconds", "memory") == sink.last_acked_ms / 1000
    assert re.search(r"^httpqueue_export_max_events 50\.0$", text, re.M)


def test_without_export_the_status_says_off_and_lists_no_sink(make_context: t.Callable[..., Context]) -> None:
    ctx = make_context(shards=2)
    client = ctx.store.redis
    client.xgroup_create(ctx.keys.events(0), "not-an-exporter", id="0", mkstream=True)  # other groups are ignored
    body = create_app(ctx.settings).test_client().get("/v1/export").get_json()
    assert body == {"enabled": False, "max_events": 0, "shards": 2, "sinks": []}


def test_a_scrape_leaves_the_export_gauges_out_while_redis_does_not_answer() -> None:
    """The API's /metrics answers with what it has: the export gauges are skipped, not an error."""
    ctx = types.SimpleNamespace(store=types.SimpleNamespace(redis=redis_client(f"redis://127.0.0.1:{free_port()}")),
                                keys=Keys(fresh_prefix(), 2))
    assert list(ExportCollector(ctx).collect()) == []
