"""The same service on every store and broker: {standalone, Sentinel, Redis Cluster} x {Redis, RabbitMQ}.

One test, parametrised over the six combinations (not copied): a real API
process and a real worker process configured only through ``HTTPQUEUE_*``
variables, as an operator would, on the session's servers:

- standalone store: the suite's Redis, in a database of this test's own
  (:data:`STANDALONE_DB`); with the Redis broker it is its own broker (no
  ``HTTPQUEUE_BROKER_URL``), as in the default deployment;
- Sentinel store: the session's master, replica and three sentinels through
  their ``sentinel://`` URL; with the Redis broker it is its own broker too
  (kombu's sentinel transport, ``HTTPQUEUE_SENTINEL_MASTER``);
- Redis Cluster store (3 masters, 3 replicas): a cluster cannot be a broker,
  so the Redis broker is the suite's standalone Redis, database
  :data:`CLUSTER_BROKER_DB`;
- RabbitMQ broker: a vhost of the test's own on the machine's RabbitMQ.

Each case creates tasks due now, in under a second and in a few seconds,
deletes one before it is due, and has one fail its first attempt: every
acknowledged task reaches the receiver once (the failing one twice, attempts
1 and 2), the deleted one never, and the API reports the final states.
"""
from __future__ import annotations

import collections
import concurrent.futures
import typing as t
import uuid

import pytest
import requests

from httpqueue.config import Settings
from httpqueue.connections import StoreClient, redis_client
from httpqueue.context import Context
from httpqueue.embedded import EmbeddedRedis, free_port
from tests.support.cluster import LocalCluster
from tests.support.processes import Proc, settings_env, start_api, start_worker, wait_until
from tests.support.rabbitmq import VHost, rabbitmq_vhost  # noqa: F401  (fixture)
from tests.support.receiver import Answer, Receiver
from tests.support.sentinel import MASTER, SentinelGroup
from tests.support.settings import TEST_SETTINGS
from tests.support.store import drop_prefix, fresh_prefix
from tests.support.databases import BrokerDb

STORES = ("standalone", "sentinel", "cluster")
BROKERS = ("redis", "rabbitmq")

STANDALONE_DB = int(BrokerDb.COMBINATIONS_STANDALONE)
"""The suite's Redis database of the standalone store (and its broker)."""

CLUSTER_BROKER_DB = int(BrokerDb.COMBINATIONS_CLUSTER)
"""The suite's Redis database that is the Redis broker of the cluster store."""

DELAYS = {"now": 0.0, "sub-second": 0.4, "seconds": 3.0}
"""The delays of the tasks that must arrive; the deleted task is due at 2.5 s, before the last of them."""


class Combination(t.NamedTuple):
    store: str
    broker: str
    overrides: dict[str, t.Any]
    client: StoreClient


@pytest.fixture
def combination(request: pytest.FixtureRequest, store: str, broker: str) -> t.Iterator[Combination]:
    """The settings of one store x broker case (a fresh key prefix), and a client of its store."""
    overrides: dict[str, t.Any] = {**TEST_SETTINGS, "key_prefix": fresh_prefix(), "broker_url": ""}
    if store == "standalone":
        server: EmbeddedRedis = request.getfixturevalue("redis_server")
        overrides["redis_url"] = f"redis://127.0.0.1:{server.port}/{STANDALONE_DB}"
    elif store == "sentinel":
        group: SentinelGroup = request.getfixturevalue("redis_sentinel")
        overrides.update(redis_url=group.url, sentinel_master=MASTER)
    else:
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        overrides["redis_url"] = cluster.url
        if broker == "redis":
            server = request.getfixturevalue("redis_server")
            overrides["broker_url"] = f"redis://127.0.0.1:{server.port}/{CLUSTER_BROKER_DB}"
    if broker == "rabbitmq":
        overrides["broker_url"] = t.cast(VHost, request.getfixturevalue("rabbitmq_vhost")).url
    client = redis_client(overrides["redis_url"], MASTER)
    yield Combination(store, broker, overrides, client)
    drop_prefix(client, Context(Settings.load(overrides, environ={})).keys)
    client.close()


def start_both(combo: Combination) -> tuple[Proc, Proc, str]:
    """The API and the worker of the case, started side by side (each waited for with its own deadline)."""
    env = settings_env(combo.overrides)
    name = f"{combo.store}-{combo.broker}"
    port = free_port()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        api = pool.submit(start_api, env, port, f"api-combo-{name}", 1)
        worker = pool.submit(start_worker, env, f"worker-combo-{name}", t.cast(t.Any, combo.client),
                             combo.overrides["key_prefix"])
        procs = []
        for future in (api, worker):
            try:
                procs.append(future.result())
            except BaseException:
                for started in (api, worker):
                    if started.done() and started.exception() is None:
                        started.result().stop()
                raise
    return procs[0], procs[1], f"http://127.0.0.1:{port}"


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("store", STORES)
def test_every_store_with_every_broker(combination: Combination, receiver: Receiver, store: str,
                                       broker: str) -> None:
    path, flaky = f"/combo-{uuid.uuid4().hex[:8]}", f"/combo-flaky-{uuid.uuid4().hex[:8]}"
    receiver.script(flaky, Answer({"code": 500}))  # the first attempt fails, the retry succeeds
    api, worker, base = start_both(combination)
    http = requests.Session()

    def create(callback_path: str, delay: float, retry: int = 0) -> str:
        answer = http.post(f"{base}/create", timeout=10, json={
            "topic": f"combo-{store}-{broker}", "delay": delay, "retry": retry,
            "callback": receiver.url(callback_path), "content": f"{store}/{broker}"})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id"])

    try:
        due = {create(path, delay): name for name, delay in DELAYS.items()}
        doomed = create(path, 2.5)
        deleted = http.post(f"{base}/delete", json={"id": doomed}, timeout=10)
        assert deleted.status_code == 200, deleted.text
        retried = create(flaky, 0.0, retry=2)

        receiver.wait_for(lambda got: {r.task_id for r in got if r.path == path} >= set(due), timeout=30)
        calls = receiver.wait_task(retried, count=2, timeout=20)

        def state(task_id: str) -> t.Any:
            return http.post(f"{base}/query", json={"id": task_id}, timeout=5).json()["state"]
        # recorded as done: from now on a second copy would be a bug, not a delivery still in flight
        wait_until(lambda: all(state(i) == "succeeded" for i in [*due, retried]), 15, "every task succeeded")
        assert state(doomed) == "deleted"

        arrivals = collections.Counter(r.task_id for r in receiver.requests if r.path == path)
        assert arrivals == collections.Counter(set(due)), {due.get(i, i): n for i, n in arrivals.items()}
        assert doomed not in arrivals  # due before the 3 s task, which has arrived
        assert [r.headers["X-Httpqueue-Attempt"] for r in calls] == ["1", "2"]
        assert calls[1].at - calls[0].at >= 0.9  # retry_base 1 s
        assert requests.get(f"{base}/ready", timeout=5).json()["status"] == "ready"
    finally:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda proc: proc.stop(), (api, worker)))
        http.close()
