"""The Elasticsearch sink with the official client against a ``_bulk`` stand-in (no Elasticsearch server can
be installed here; see tests/support/standins.py for what it checks and answers)."""
from __future__ import annotations

import typing as t

import pytest

from httpqueue.connections import StoreClient
from httpqueue.export.events import parse
from httpqueue.export.pump import Backoff, Pump
from httpqueue.export.sinks import SinkUnavailable
from httpqueue.export.sinks.elasticsearch import ElasticsearchSink
from httpqueue.export.stream import GroupReader
from httpqueue.store.keys import Keys
from tests.export.conftest import add_events, pending_count
from tests.support.standins import BulkStandIn


@pytest.fixture
def standin() -> t.Iterator[BulkStandIn]:
    server = BulkStandIn().start()
    yield server
    server.stop()


def events(n: int) -> list[t.Any]:
    return [parse(1, f"17641300000{i:02d}-0", {"k": "retrying", "id": f"t{i}", "tp": "orders",
                                                "t": str(1764130000000 + i), "n": "2", "code": "500", "ms": "8.25",
                                                "late": "4", "err": "HTTP 500", "next": "1764130060000",
                                                "h": "shop.example"}) for i in range(n)]


def test_bulk_writes_ecs_documents_under_the_event_id_and_puts_the_template(standin: BulkStandIn) -> None:
    sink = ElasticsearchSink(standin.url + "?ilm_policy=httpqueue-30d")
    batch = events(3)
    assert sink.write(batch).retry == set()
    assert sink.write(batch).rejected == {}  # a re-sent batch overwrites itself
    assert standin.problems == [] and len(standin.documents) == 3
    doc = standin.documents[("httpqueue-events-2025.11.26", batch[0].event_id)]
    assert doc["event"] == {"id": batch[0].event_id, "kind": "event", "action": "retrying", "outcome": "failure",
                            "duration": 8_250_000, "dataset": "httpqueue.task"}
    assert doc["@timestamp"] == "2025-11-26T04:06:40.000Z" and doc["url"] == {"domain": "shop.example"}
    assert doc["error"] == {"message": "HTTP 500"} and doc["httpqueue"]["lateness_ms"] == 4
    template = standin.templates["httpqueue-events"]
    assert template["index_patterns"] == ["httpqueue-events-*"]
    assert template["template"]["settings"]["index.lifecycle.name"] == "httpqueue-30d"


def test_per_item_failures_are_retried_or_refused(standin: BulkStandIn) -> None:
    batch = events(4)
    # 429 on every try the helper makes (1 + 2 retries): handed back for a later retry; 400: refused for good
    standin.item_failures = {batch[0].event_id: [429, 429, 429], batch[1].event_id: [400]}
    result = ElasticsearchSink(standin.url).write(batch)
    assert result.retry == {batch[0].event_id}
    assert list(result.rejected) == [batch[1].event_id] and "mapper_parsing_exception" in result.rejected[batch[1].event_id]
    assert len(standin.documents) == 2


def test_a_429_on_one_item_is_retried_by_the_helper(standin: BulkStandIn) -> None:
    batch = events(2)
    standin.item_failures = {batch[0].event_id: [429]}
    result = ElasticsearchSink(standin.url).write(batch)
    assert result.retry == set() and result.rejected == {} and len(standin.documents) == 2


def test_whole_request_failures_make_the_sink_unavailable(standin: BulkStandIn) -> None:
    sink = ElasticsearchSink(standin.url)
    sink.prepare()
    standin.request_failures = [503] * 10
    with pytest.raises(SinkUnavailable):
        sink.write(events(2))
    standin.request_failures = []
    assert sink.write(events(2)).retry == set() and len(standin.documents) == 2


def test_down_server_is_unavailable() -> None:
    sink = ElasticsearchSink("elasticsearch://127.0.0.1:9?x=1", timeout=1)
    with pytest.raises(SinkUnavailable):
        sink.write(events(1))


def test_exporting_through_the_standin_with_partial_failures(standin: BulkStandIn, rclient_store: StoreClient,
                                                              keys: Keys) -> None:
    sink = ElasticsearchSink(standin.url)
    pump = Pump(GroupReader(rclient_store, keys, "export:es", "a"), sink, batch=50, backoff=Backoff(first=0.01))
    pump.reader.ensure_groups()
    ids = add_events(rclient_store, keys, 20)
    busy, broken = f"0-{ids[0]}", f"1-{ids[1]}"
    standin.item_failures = {busy: [429, 429, 429], broken: [400]}
    assert pump.step() == 0.01  # one event kept for later, one refused for good, 18 stored
    assert len(standin.documents) == 18 and pending_count(rclient_store, keys, "export:es") == 1
    assert pump.step() == 0.0
    assert ("httpqueue-events-2025.11.26", busy) in standin.documents and len(standin.documents) == 19
    assert pump.stats.rejected == 1 and pump.stats.exported == 19
    assert pending_count(rclient_store, keys, "export:es") == 0 and standin.problems == []
