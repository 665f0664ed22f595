"""Checks that span every shard or every master, on each kind of store: health, and scripts Redis forgot."""
from __future__ import annotations

from httpqueue import health
from httpqueue.store.records import NewTask
from httpqueue.store.tasks import TaskStore
from tests.support.store import HOUR_MS, NOWHERE, parked, queued

NOW = 1_750_000_000_000


def test_overdue_counts_every_shard(fresh_store: TaskStore) -> None:
    late = [parked(fresh_store, NOW - HOUR_MS, delay_ms=fresh_store.direct_ms + 1) for _ in range(6)]
    parked(fresh_store, NOW)  # due in an hour: not late
    queued(fresh_store, NOW - 10)  # handed out, never claimed, due 10 ms ago
    shards = {fresh_store.keys.shard_of(i) for i in late}
    assert len(shards) > 1  # the check sums several shards (several nodes of a cluster)
    found = health.overdue(fresh_store.redis, fresh_store.keys, NOW)
    assert found.count == 7
    assert found.oldest_due_ms == NOW - HOUR_MS + fresh_store.direct_ms + 1


def test_overdue_counts_tasks_left_in_the_list_of_an_hour_that_has_started(fresh_store: TaskStore) -> None:
    """No promoter moved them to the timer: a far task is overdue in its hour list once its due time passed."""
    due = (NOW // HOUR_MS + 3) * HOUR_MS + 5_000  # an hour beyond the promoter's reach
    late = [fresh_store.create(NewTask("t", NOWHERE, n, due + n, 0), NOW).task_id for n in range(3)]
    gone = fresh_store.create(NewTask("t", NOWHERE, "gone", due, 0), NOW).task_id
    fresh_store.delete(gone, NOW)
    assert health.overdue(fresh_store.redis, fresh_store.keys, due + 1).count == 2  # the third is not due yet
    found = health.overdue(fresh_store.redis, fresh_store.keys, due + 10)
    assert found == health.Overdue(3, due) and len(late) == 3  # the deleted one is not counted


def test_persistence_is_what_every_master_keeps(store_kind: str, fresh_store: TaskStore) -> None:
    # the suite's Redis writes an append-only file; the suite's cluster keeps nothing on disk
    assert health.persistence(fresh_store.redis) == {"standalone": "aof", "cluster": "none"}[store_kind]


def test_heartbeats_are_seen_and_forgotten(fresh_store: TaskStore) -> None:
    keys, client = fresh_store.keys, fresh_store.redis
    health.beat(client, keys, "w1@host", 10_000)  # the set and the per-worker key: two slots on a cluster
    assert health.live_workers(client, keys) == 1 and client.exists(keys.worker_heartbeat("w1@host"))
    health.forget(client, keys, "w1@host")
    assert health.live_workers(client, keys) == 0


def test_scripts_lost_by_redis_are_loaded_again(fresh_store: TaskStore) -> None:
    """After a restart, or on a replica promoted since the scripts were loaded (``SCRIPT LOAD`` is not
    replicated since Redis 7.0), calls answered ``NOSCRIPT`` load the script and run: alone or grouped."""
    fresh_store.redis.script_flush()  # every master of a cluster
    assert queued(fresh_store, NOW).gen == 1  # one call alone
    fresh_store.redis.script_flush()
    batch = fresh_store.create_many([NewTask("t", NOWHERE, n, NOW + HOUR_MS, 0) for n in range(12)], NOW)
    assert len({fresh_store.keys.shard_of(c.task_id) for c in batch}) > 1  # grouped by node on a cluster
    assert fresh_store.counts() == {("queued", "t"): 1, ("scheduled", "t"): 12}
