"""Redis Cluster as the task store: a master killed under load, and slots moved under load.

Each test starts its own cluster (3 masters, 3 replicas, ``cluster-node-timeout``
1.5 s; ``tests/support/cluster.py``), a standalone Redis as the Celery broker (a
cluster cannot be one), the API (gunicorn) and a worker, and drives creates and
deletes through the HTTP API while the fault happens. Then, with a deadline:
every acknowledged create was delivered, none after its delete was
acknowledged, and no answer was a 5xx other than 503. The figures go to
``test-artifacts/faults.jsonl`` (the README's Redis Cluster section quotes them).
"""
from __future__ import annotations

import subprocess
import threading
import time
import typing as t
from pathlib import Path

import pytest
from redis.crc import key_slot

from httpqueue.connections import StoreClient, redis_client
from httpqueue.embedded import EmbeddedRedis, free_port
from httpqueue.store.keys import Keys
from tests.support.cluster import LocalCluster, Node, have_cluster_tools
from tests.support.faults import Load, Service, Tally, assert_duplicates_explained, drive, settle
from tests.support.processes import wait_until
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.faults]

if not have_cluster_tools():
    pytest.skip("redis-cli is needed for a Redis Cluster (apt-get install redis-tools)", allow_module_level=True)

SHARDS = 16
"""Shards of the service under test: spread over every master, several on the one that fails."""

KEYS = Keys("hq", SHARDS)

UNREPLICATED_LOSS_BOUND = 20
"""Most acknowledged creates a failover may lose without ``create_min_replicas`` (loopback replication
lags by well under a millisecond; what is measured is written to the README)."""


@pytest.fixture
def cluster(tmp_path: Path) -> t.Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster").start()
    yield c
    c.stop()


@pytest.fixture
def broker(tmp_path: Path) -> t.Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "broker", port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def store(cluster: LocalCluster) -> t.Iterator[StoreClient]:
    client = redis_client(cluster.url)
    yield client
    client.close()


def cluster_service(tmp_path: Path, cluster: LocalCluster, broker: EmbeddedRedis, **overrides: t.Any) -> Service:
    return Service(tmp_path, redis_url=cluster.url, broker_url=broker.url, shards=SHARDS, **overrides)


def slot_of_shard(shard: int) -> int:
    return key_slot(KEYS.tag(shard).encode())


def no_server_errors(load: Load) -> list[int]:
    """The 5xx answers other than 503 (a 500 means an error the store did not translate)."""
    return sorted(status for status in load.statuses if status >= 500 and status != 503)


def check(tally: Tally, load: Load) -> None:
    assert not no_server_errors(load), load.statuses
    assert not tally.fired_after_delete, tally.fired_after_delete
    assert load.errors == 0, "requests that got no answer at all"
    assert load.statuses[200] >= 80, load.statuses  # (with create_min_replicas a 503 takes up to 2.5 s: fewer creates)


@pytest.mark.parametrize("min_replicas", [1, 0], ids=["wait-1-replica", "no-wait"])
def test_failover_of_a_master_under_load(tmp_path: Path, cluster: LocalCluster, broker: EmbeddedRedis,
                                         store: StoreClient, receiver: Receiver, topic: str,
                                         min_replicas: int) -> None:
    """kill -9 the master of shard 0's slot; its replica takes over; with WAIT 1 replica nothing acked is lost."""
    path = f"/{topic}"
    service = cluster_service(tmp_path, cluster, broker, create_min_replicas=min_replicas,
                              create_replica_timeout=0.5)
    slot = slot_of_shard(0)
    victim = cluster.master_of_slot(slot)
    heir = cluster.replica_of(victim)
    try:
        service.start_api()
        service.start_worker("fault-cluster", client=store)  # type: ignore[arg-type]
        load = Load()
        thread = drive(service.url, receiver, path, seconds=9, rate=40, load=load)
        wait_until(lambda: len(load.acked) >= 80, 15, "the load under way")
        cluster.kill(victim.port)  # SIGKILL: its replica notices after cluster-node-timeout
        killed = time.monotonic()
        wait_until(lambda: cluster.master_of_slot(slot).port == heir.port and cluster.stable(), 30,
                   "the replica takes over the slots")
        failover_s = time.monotonic() - killed
        cluster.restart(victim.port)  # it comes back as the replica of its heir (WAIT can be met again)
        wait_until(lambda: int(cluster.node(heir.port).info("replication")["connected_slaves"]) >= 1, 30,
                   "the old master replicates the new one")
        recovered_s = time.monotonic() - killed
        thread.join()
        tally = settle(load, receiver, path, timeout=60)
        tally.recovery_s = recovered_s
        tally.report(f"Redis Cluster failover (kill -9 master, create_min_replicas={min_replicas})", 1,
                     failover_s=round(failover_s, 2), answered_503=load.statuses[503],
                     answered_200=load.statuses[200])
        check(tally, load)
        if min_replicas:
            assert not tally.lost, tally.lost
        else:
            assert len(tally.lost) <= UNREPLICATED_LOSS_BOUND, tally.lost
        assert_duplicates_explained(tally, bound=40)
    finally:
        service.stop()


def test_resharding_under_load(tmp_path: Path, cluster: LocalCluster, broker: EmbeddedRedis, store: StoreClient,
                               receiver: Receiver, topic: str) -> None:
    """Move the slots of every shard of one master to another and back while tasks are created, fired and deleted."""
    path = f"/{topic}"
    service = cluster_service(tmp_path, cluster, broker)
    source = cluster.master_of_slot(slot_of_shard(0))
    target = next(n for n in cluster.nodes() if n.master and n.id != source.id)
    slots = sorted({slot_of_shard(shard) for shard in range(SHARDS)} & {
        s for a, b in source.slots for s in range(a, b + 1)})
    try:
        service.start_api()
        service.start_worker("fault-reshard", client=store)  # type: ignore[arg-type]
        load = Load()
        stop = threading.Event()
        thread = drive(service.url, receiver, path, seconds=120, rate=40, load=load, stop=stop)
        moved = 0
        for there, back in ((source, target), (target, source)):
            wait_until(lambda: len(load.acked) >= 80, 15, "the load under way")
            for slot in slots:
                before = len(load.acked)
                moved += cluster.move_slot(slot, there, back, halfway=lambda: wait_until(
                    lambda: len(load.acked) >= before + 10, 15, "creates while the slot is half moved"))
                cluster.wait_stable(30)
            assert {cluster.master_of_slot(slot).id for slot in slots} == {back.id}
            load_before = len(load.acked)
            wait_until(lambda: len(load.acked) >= load_before + 40, 15, "creates after the move")
        stop.set()
        thread.join()
        tally = settle(load, receiver, path, timeout=60)
        tally.report("Redis Cluster resharding (the slots of a master's shards moved and back)", 2 * len(slots),
                     keys_moved=moved, answered_503=load.statuses[503])
        check(tally, load)
        assert moved > 100  # the slots held tasks when they moved
        assert not tally.lost, tally.lost
        assert not tally.duplicated, tally.duplicated
    finally:
        service.stop()
