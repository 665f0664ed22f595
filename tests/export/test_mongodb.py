"""The MongoDB sink with real pymongo against mockupdb, MongoDB's own wire-protocol test server (no MongoDB
server can be installed here). mockupdb advertises wire version 21 (MongoDB 8.0), as pymongo 4.x requires."""
from __future__ import annotations

import threading
import typing as t

import pytest

pytest.importorskip("mockupdb")
from mockupdb import MockupDB, OpMsg  # noqa: E402

from httpqueue.export.events import Event, parse  # noqa: E402
from httpqueue.export.sinks import SinkUnavailable  # noqa: E402
from httpqueue.export.sinks.mongodb import MongoSink  # noqa: E402


@pytest.fixture
def server() -> t.Iterator[MockupDB]:
    mock = MockupDB(auto_ismaster=True, max_wire_version=21)
    mock.run()
    yield mock
    mock.stop()


def events(n: int) -> list[Event]:
    return [parse(2, f"17641300000{i:02d}-0", {"k": "succeeded", "id": f"t{i}", "tp": "orders",
                                                "t": str(1764130000000 + i), "n": "1", "code": "0", "ms": "3.5",
                                                "late": "2", "h": "shop.example"}) for i in range(n)]


def in_background(call: t.Callable[[], t.Any]) -> tuple[threading.Thread, dict[str, t.Any]]:
    """Run a blocking pymongo call in a thread while the test answers the mock server."""
    out: dict[str, t.Any] = {}

    def run() -> None:
        try:
            out["result"] = call()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_prepare_creates_the_ttl_index_and_insert_many_is_unordered_with_event_ids(server: MockupDB) -> None:
    sink = MongoSink(f"mongodb://127.0.0.1:{server.port}/analytics?collection=task_events&ttl_days=7",
                     timeout_ms=3000)
    batch = events(3)
    thread, out = in_background(lambda: sink.write(batch))
    index = server.receives(OpMsg("createIndexes", "task_events"))
    (spec,) = index.doc["indexes"]
    assert spec["key"] == {"ts": 1} and spec["expireAfterSeconds"] == 7 * 86_400
    index.ok()
    insert = server.receives(OpMsg("insert", "task_events"))
    assert insert.doc["ordered"] is False and insert.doc["$db"] == "analytics"
    docs = insert.doc["documents"]
    assert [d["_id"] for d in docs] == [e.event_id for e in batch]
    assert docs[0]["kind"] == "succeeded" and docs[0]["duration_ms"] == 3.5 and "error" not in docs[0]
    insert.ok(n=3)
    thread.join(5)
    assert out["result"].retry == set() and out["result"].rejected == {}
    assert sink.label == "mongodb:127.0.0.1:%d/analytics.task_events" % server.port


def test_duplicate_ids_of_a_resent_batch_are_success_and_other_errors_are_sorted(server: MockupDB) -> None:
    sink = MongoSink(f"mongodb://127.0.0.1:{server.port}/httpqueue?ttl_days=0", timeout_ms=3000)
    sink._prepared = True
    batch = events(4)
    thread, out = in_background(lambda: sink.write(batch))
    insert = server.receives(OpMsg("insert", "events"))
    insert.ok(n=1, writeErrors=[
        {"index": 0, "code": 11000, "errmsg": "E11000 duplicate key error"},
        {"index": 1, "code": 11000, "errmsg": "E11000 duplicate key error"},
        {"index": 2, "code": 91, "errmsg": "interrupted at shutdown"},
    ])
    thread.join(5)
    assert out["result"].retry == {batch[2].event_id} and out["result"].rejected == {}


def test_a_refused_document_is_rejected_for_good(server: MockupDB) -> None:
    sink = MongoSink(f"mongodb://127.0.0.1:{server.port}/httpqueue?ttl_days=0", timeout_ms=3000)
    sink._prepared = True
    batch = events(2)
    thread, out = in_background(lambda: sink.write(batch))
    server.receives(OpMsg("insert", "events")).ok(n=1, writeErrors=[
        {"index": 1, "code": 121, "errmsg": "Document failed validation"}])
    thread.join(5)
    assert out["result"].rejected == {batch[1].event_id: "Document failed validation"}


def test_a_time_series_collection_is_created_when_asked(server: MockupDB) -> None:
    sink = MongoSink(f"mongodb://127.0.0.1:{server.port}/httpqueue?timeseries=1&ttl_days=2", timeout_ms=3000)
    thread, out = in_background(sink.prepare)
    request = server.receives()
    if request.command_name == "listCollections":  # pymongo checks for an existing collection first
        request.ok(cursor={"id": 0, "ns": "httpqueue.$cmd.listCollections", "firstBatch": []})
        request = server.receives()
    assert request.command_name == "create"
    assert request.doc["timeseries"] == {"timeField": "ts", "metaField": "meta", "granularity": "seconds"}
    assert request.doc["expireAfterSeconds"] == 2 * 86_400
    request.ok()
    thread.join(5)
    assert "error" not in out


def test_an_unreachable_server_makes_the_sink_unavailable() -> None:
    sink = MongoSink("mongodb://127.0.0.1:9/httpqueue", timeout_ms=300)
    with pytest.raises(SinkUnavailable):
        sink.write(events(1))
