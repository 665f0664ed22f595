"""End to end: a real API and worker with export on, tasks created and delivered (some after a retry, one
deleted), and ``httpqueue export --sink clickhouse://...`` as its own process filling a real ClickHouse with
every event exactly once, through a ClickHouse outage in the middle."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from httpqueue.embedded import EmbeddedRedis, free_port
from httpqueue.store.keys import Keys
from tests.support.clickhouse import LocalClickHouse, server_binary
from tests.support.processes import Proc, settings_env, start_api, start_worker, wait_until
from tests.support.receiver import Answer, Receiver
from tests.support.settings import TEST_SETTINGS
from tests.support.store import drop_prefix, fresh_prefix
from tests.support.databases import BrokerDb

pytestmark = pytest.mark.skipif(server_binary() is None, reason="clickhouse-server is not installed")

TABLE = "e2e_events"


def stream_ids(client: redis.Redis, keys: Keys) -> set[str]:
    """The event ids of every entry in every shard's stream."""
    return {f"{shard}-{entry_id}" for shard in range(keys.shards)
            for entry_id, _ in client.xrange(keys.events(shard), "-", "+")}


BROKER_DB = int(BrokerDb.EXPORT_END_TO_END)
"""Redis database of this test's broker (tests/support/databases.py names them all)."""


def test_export_fills_clickhouse_with_every_event_once_through_an_outage(
        tmp_path: Path, redis_server: EmbeddedRedis, receiver: Receiver) -> None:
    prefix = fresh_prefix()
    keys = Keys(prefix, TEST_SETTINGS["shards"])
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    # a broker database of its own: the session's worker (another key prefix) would take this test's
    # delivery messages from the shared one, find no such task and drop them (seen in the full suite)
    broker = redis_server.url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    env = settings_env({**TEST_SETTINGS, "redis_url": redis_server.url, "key_prefix": prefix,
                        "broker_url": broker, "export_max_events": 10_000, "export_batch": 50})
    clickhouse = LocalClickHouse(tmp_path / "clickhouse").start()
    for shard in range(keys.shards):  # a group that reads nothing keeps every event in the streams, to compare
        client.xgroup_create(keys.events(shard), "audit", id="0", mkstream=True)
    port = free_port()
    procs: list[Proc] = []
    try:
        procs.append(start_worker(env, f"export-e2e-{prefix}", client, prefix))
        procs.append(start_api(env, port, name="export-e2e-api"))
        metrics_port = free_port()
        exporter = Proc([*_python(), "-m", "httpqueue", "export", "--sink", f"{clickhouse.url}?table={TABLE}",
                         "--metrics-port", str(metrics_port)], env, "export-e2e-exporter")
        procs.append(exporter)
        path = f"/export-{uuid.uuid4().hex[:8]}"
        receiver.script(path, *[Answer(status=500, body="down")] * 3)  # three first attempts fail: retried a second later
        receiver.default(path, Answer())

        def create(n: int, delay: float = 0.2) -> list[str]:
            return [requests.post(f"http://127.0.0.1:{port}/create", timeout=5, json={
                "topic": "e2e", "delay": delay, "retry": 3, "callback": receiver.url(path)}).json()["id"]
                for _ in range(n)]

        first = create(10)
        wait_until(lambda: _rows(clickhouse) > 0, 30, "the first events in ClickHouse")
        clickhouse.stop(grace=0)  # the sink goes away mid-export
        second = create(10)
        parked = create(1, delay=3600)
        assert requests.delete(f"http://127.0.0.1:{port}/v1/tasks/{parked[0]}", timeout=5).status_code in (200, 204)
        for task_id in first + second:
            wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/v1/tasks/{task_id}", timeout=5)
                       .json().get("state") == "succeeded", 30, f"task {task_id} delivered")
        time.sleep(1)
        clickhouse.start()
        expected = stream_ids(client, keys)
        written = _kinds(client, keys)
        assert (written["created"], written["retrying"], written["succeeded"], written["deleted"]) == (21, 3, 20, 1)
        assert written["claimed"] == 23 and written.get("promoted", 0) <= 3  # retries come back through the timer
        wait_until(lambda: _rows(clickhouse, final=True) == len(expected), 60, "every event in ClickHouse")
        stored = {row[0] for row in clickhouse.query(f"SELECT event_id FROM {TABLE} FINAL")}
        assert stored == expected
        assert dict(clickhouse.query(f"SELECT kind, count() FROM {TABLE} FINAL GROUP BY kind")) == written
        [(retries, hosts)] = clickhouse.query(
            f"SELECT countIf(kind = 'retrying'), uniqExact(callback_host) FROM {TABLE} FINAL")
        assert retries == 3 and hosts == 1
        sink = f'sink="clickhouse:127.0.0.1:{clickhouse.tcp_port}/default/{TABLE}"'
        wait_until(lambda: f"httpqueue_export_lag_events{{{sink}}} 0.0" in _metrics(metrics_port), 15, "lag 0")
        metrics = _metrics(metrics_port)
        assert f"httpqueue_export_events_total{{{sink}}} {float(len(expected))}" in metrics
        assert f"httpqueue_export_dropped_events{{{sink}}} 0.0" in metrics
        assert f"httpqueue_export_failures_total{{{sink}}} 0.0" not in metrics  # the outage was seen
        assert exporter.alive()
    finally:
        for proc in reversed(procs):
            proc.stop()
        clickhouse.stop()
        drop_prefix(client, keys)
        client.close()


def _kinds(client: redis.Redis, keys: Keys) -> dict[str, int]:
    found: dict[str, int] = {}
    for shard in range(keys.shards):
        for _, fields in client.xrange(keys.events(shard), "-", "+"):
            found[fields["k"]] = found.get(fields["k"], 0) + 1
    return found


def _metrics(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def _python() -> list[str]:
    import sys

    return [sys.executable]


def _rows(clickhouse: LocalClickHouse, final: bool = False) -> int:
    try:
        [(count,)] = clickhouse.query(f"SELECT count() FROM {TABLE}{' FINAL' if final else ''}")
        return int(count)
    except Exception:  # the table is not there yet
        return 0


