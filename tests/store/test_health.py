"""The health checks on each kind of store: they span every shard (overdue) or every master (persistence)."""
from __future__ import annotations

from httpqueue import health
from httpqueue.store.tasks import TaskStore
from tests.support.store import HOUR_MS, parked, queued

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


def test_persistence_is_what_every_master_keeps(store_kind: str, fresh_store: TaskStore) -> None:
    # the suite's Redis writes an append-only file; the suite's cluster keeps nothing on disk
    assert health.persistence(fresh_store.redis) == {"standalone": "aof", "cluster": "none"}[store_kind]


def test_heartbeats_are_seen_and_forgotten(fresh_store: TaskStore) -> None:
    keys, client = fresh_store.keys, fresh_store.redis
    health.beat(client, keys, "w1@host", 10_000)  # the set and the per-worker key: two slots on a cluster
    assert health.live_workers(client, keys) == 1 and client.exists(keys.worker_heartbeat("w1@host"))
    health.forget(client, keys, "w1@host")
    assert health.live_workers(client, keys) == 0
