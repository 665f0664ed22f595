"""The whole path on each kind of store: the API, a real Celery worker and a real receiver.

Run on a standalone Redis and on a Redis Cluster (``store_kind``, see this
folder's ``conftest.py``). The broker is always a standalone Redis (a cluster
cannot be one): the suite's Redis, in a database of this test's own, so the
session's worker never takes these messages. A store of a fresh key prefix
each time. Also: a cluster store without a broker of its own is refused at start.
"""
from __future__ import annotations

import pytest
import requests

from httpqueue.config import ConfigError, Settings
from httpqueue.connections import cluster_enabled, redis_client
from httpqueue.context import Context
from httpqueue.embedded import EmbeddedRedis, free_port
from tests.support.processes import settings_env, start_api, start_worker, wait_until
from tests.support.receiver import Receiver
from tests.support.settings import TEST_SETTINGS
from tests.support.store import drop_prefix, fresh_prefix
from tests.support.databases import BrokerDb

BROKER_DB = BrokerDb.STORE_END_TO_END
"""The suite's Redis database that carries this test's Celery messages."""


def test_api_and_worker_deliver_on_the_store(store_kind: str, store_url: str, redis_server: EmbeddedRedis,
                                            receiver: Receiver) -> None:
    prefix = fresh_prefix()
    overrides = {**TEST_SETTINGS, "redis_url": store_url, "key_prefix": prefix, "shards": 8,
                 "broker_url": f"redis://127.0.0.1:{redis_server.port}/{int(BROKER_DB)}"}
    env = settings_env(overrides)
    client = redis_client(store_url)
    port = free_port()
    api = start_api(env, port, name=f"api-{store_kind}", workers=1)
    worker = start_worker(env, f"worker-{store_kind}", client, prefix=prefix)  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{port}"
    try:
        ids = []
        for n in range(12):  # due now (published by the API) and later (by the promoter), over every shard
            answer = requests.post(f"{base}/create", timeout=10, json={
                "topic": f"e2e-{store_kind}", "delay": [0, 0.5, 2.5][n % 3], "retry": 0,
                "callback": receiver.url(f"/e2e-{store_kind}"), "content": f"n{n}"})
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["id"])
        batch = requests.post(f"{base}/v1/tasks/batch", timeout=10, json={"tasks": [
            {"topic": f"e2e-{store_kind}", "delay": 1, "callback": receiver.url(f"/e2e-{store_kind}")}
            for _ in range(10)]})
        assert batch.status_code == 200, batch.text
        ids += [item["id"] for item in batch.json()["results"]]
        for task_id in ids:
            assert len(receiver.wait_task(task_id, timeout=20)) == 1
        wait_until(lambda: all(requests.post(f"{base}/query", json={"id": i}, timeout=5).json()["state"]
                               == "succeeded" for i in ids), 15, "every task succeeded")
        assert requests.get(f"{base}/ready", timeout=5).json()["status"] == "ready"  # the worker's heartbeat
    finally:
        api.stop()
        worker.stop()
        drop_prefix(client, Context(Settings.load(overrides, environ={})).keys)
        client.close()


def test_a_cluster_store_needs_a_broker_of_its_own(store_kind: str, store_url: str) -> None:
    settings = Settings.load({**TEST_SETTINGS, "redis_url": store_url, "broker_url": ""}, environ={})
    if store_kind == "standalone":
        assert Context(settings).store is not None  # the store's Redis is the broker too
        return
    with pytest.raises(ConfigError, match="HTTPQUEUE_BROKER_URL.*amqp://"):
        Context(settings)


def test_an_unreachable_node_is_taken_for_a_standalone_redis() -> None:
    """So a process started while Redis is away still starts, and answers 503 until Redis is back."""
    assert cluster_enabled(f"redis://127.0.0.1:{free_port()}/0") is False
