"""What only a Redis Cluster store does: slots half moved, replicas acknowledging a create.

These run on the session's cluster alone (this module's ``store_kind`` is
``cluster`` only): the rest of this folder checks the store's contract on both
kinds.

A slot being resharded holds some of its keys on the old node and some on the
new one. A script that reaches keys through a prefix (the promoter's scripts
find task hashes by id) then meets a key that is "not local" and stops: Redis
keeps what the script wrote before that point. So those scripts read every task
before they write (``read_tasks`` in ``lua/common.lua``), and a half-moved slot
costs a retry, never a task.
"""
from __future__ import annotations

import typing as t

import pytest
from redis.crc import key_slot

from httpqueue.context import Context
from httpqueue.embedded import EmbeddedRedis
from httpqueue.exceptions import ReplicasMissing, StoreUnavailable
from httpqueue.states import State
from tests.support.cluster import LocalCluster
from tests.support.store import HOUR_MS, NOWHERE, FreshContexts, View
from httpqueue.store.records import NewTask

NOW = 1_750_000_000_000


@pytest.fixture
def store_kind() -> str:
    """Only the cluster (the folder's fixture runs each test on both kinds)."""
    return "cluster"


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> LocalCluster:
    return t.cast(LocalCluster, request.getfixturevalue("redis_cluster"))


@pytest.fixture
def contexts(cluster: LocalCluster, redis_server: EmbeddedRedis) -> t.Iterator[FreshContexts]:
    made = FreshContexts(cluster.url, broker_url=redis_server.url)
    yield made
    made.close()


def test_promote_in_a_half_moved_slot_takes_nothing_until_the_slot_has_moved(
        cluster: LocalCluster, contexts: FreshContexts) -> None:
    context: Context = contexts(shards=1)
    store, keys = context.store, context.keys
    due = NOW + store.direct_ms + 1
    ids = [store.create(NewTask("t", NOWHERE, n, due, 0), NOW).task_id for n in range(3)]
    store.create(NewTask("t", NOWHERE, "now", NOW, 0), NOW)  # queued: every key promote declares exists
    slot = key_slot(keys.tag(0).encode())
    source = cluster.master_of_slot(slot)
    target = next(n for n in cluster.nodes() if n.master and n.id != source.id)
    cluster.begin_move(slot, source, target)
    try:
        cluster.move_keys(source, target, [keys.task(ids[1])])  # one task's hash moved; the timer stays behind
        with pytest.raises(StoreUnavailable, match="non local key"):
            store.promote(0, due)
        cluster.move_keys(source, target, [k for k in cluster._on(source, "CLUSTER", "GETKEYSINSLOT", slot, 1000)])
        cluster.finish_move(slot, source, target)
        cluster.wait_stable(30)
        assert sorted(d.task_id for d in store.promote(0, due)) == sorted(ids)  # none was dropped on the way
        assert {store.get(i).state for i in ids} == {State.QUEUED}
    finally:  # leave the session's cluster as found
        if cluster.master_of_slot(slot).id == source.id:
            cluster.move_slot(slot, source, target)
        cluster.move_slot(slot, target, source)
        cluster.wait_stable(30)


def test_an_hour_list_in_a_half_moved_slot_waits_while_promote_goes_on(
        cluster: LocalCluster, contexts: FreshContexts) -> None:
    """The move reads the list and its tasks before writing: a task already on the other node makes it
    wait for a later pass, whole, and the promotion from the timer is not held up by it."""
    context: Context = contexts(shards=1)
    store, keys = context.store, context.keys
    hour = NOW // HOUR_MS + 3  # beyond the promoter's reach at NOW
    ids = [store.create(NewTask("t", NOWHERE, n, hour * HOUR_MS + n, 0), NOW).task_id for n in range(3)]
    store.create(NewTask("t", NOWHERE, "now", NOW, 0), NOW)  # queued: every key promote declares exists
    soon = store.create(NewTask("t", NOWHERE, "soon", NOW + HOUR_MS, 0), NOW).task_id  # in the timer
    moved_at = hour * HOUR_MS - store.reach_ms  # when its hour comes within reach; "soon" is due by then
    slot = key_slot(keys.tag(0).encode())
    source = cluster.master_of_slot(slot)
    target = next(n for n in cluster.nodes() if n.master and n.id != source.id)
    cluster.begin_move(slot, source, target)
    try:
        cluster.move_keys(source, target, [keys.task(ids[1])])  # one far task's hash moved; its list stays behind
        assert [d.task_id for d in store.promote(0, moved_at)] == [soon]
        assert cluster._on(source, "LLEN", keys.hour_list(0, hour)) == 3  # read, not written: nothing lost
        cluster.move_keys(source, target, [k for k in cluster._on(source, "CLUSTER", "GETKEYSINSLOT", slot, 1000)])
        cluster.finish_move(slot, source, target)
        cluster.wait_stable(30)
        assert store.promote(0, moved_at) == []
        assert store.redis.zrange(keys.timer(0), 0, -1) == ids  # every far one moved, in due order
    finally:  # leave the session's cluster as found
        if cluster.master_of_slot(slot).id == source.id:
            cluster.move_slot(slot, source, target)
        cluster.move_slot(slot, target, source)
        cluster.wait_stable(30)


def test_create_answers_once_a_replica_of_the_writing_node_has_the_task(
        cluster: LocalCluster, contexts: FreshContexts) -> None:
    context = contexts(shards=4, create_min_replicas=1, create_replica_timeout=1.0)
    created = context.store.create_many([NewTask("t", NOWHERE, n, NOW + 3_600_000, 0) for n in range(8)], NOW)
    for result in created:
        key = context.keys.task(result.task_id)  # type: ignore[union-attr]
        master = cluster.master_of_slot(key_slot(key.encode()))
        replica = cluster.node(cluster.replica_of(master).port)
        try:
            replica.execute_command("READONLY")
            assert replica.hget(key, "tp") == "t"  # WAIT went to the node that wrote it, and was met
        finally:
            replica.close()
    too_many = contexts(shards=4, create_min_replicas=2, create_replica_timeout=0.2)  # each master has one
    with pytest.raises(ReplicasMissing):
        too_many.store.create(NewTask("t", NOWHERE, 1, NOW + 3_600_000, 0), NOW)


def test_the_store_view_reads_a_cluster(cluster: LocalCluster, contexts: FreshContexts) -> None:
    store = contexts(shards=4).store
    task_id = store.create(NewTask("t", NOWHERE, 1, NOW + 3_600_000, 0), NOW).task_id
    assert View(store).where(task_id) == {"timer"}
