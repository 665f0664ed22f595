"""A claim records its worker's incarnation; ``orphans`` releases a dead incarnation's attempts to reclaim.

Runs on the suite's standalone Redis and on the cluster (``tests/store/conftest.py``),
so a script touching keys of two slots would fail here.
"""
from __future__ import annotations

from httpqueue.states import Outcome
from httpqueue.store import TaskStore
from httpqueue.store.records import NewTask
from tests.support.store import HOUR_MS, NOWHERE, View, queued

NOW = 1_750_000_000_000
DEAD = "dead0incarnation"
ALIVE = "live0incarnation"


def claimed_by(store: TaskStore, owner: str) -> str:
    dispatch = queued(store, NOW)
    [record] = store.claim_many([(dispatch.task_id, dispatch.gen)], NOW, store.lease_ms, owner=owner)
    return record.id


def test_claim_records_the_owner_in_the_task_and_its_owned_set(fresh_store: TaskStore) -> None:
    view = View(fresh_store)
    task_id = claimed_by(fresh_store, DEAD)
    shard = fresh_store.keys.shard_of(task_id)
    assert view.raw(task_id)["ow"] == DEAD
    owned = fresh_store.redis.zrange(fresh_store.keys.owned(shard, DEAD), 0, -1, withscores=True)
    assert [(str(m), int(s)) for m, s in owned] == [(task_id, NOW + fresh_store.lease_ms)]
    assert 0 < fresh_store.redis.pttl(fresh_store.keys.owned(shard, DEAD)) <= fresh_store.lease_ms + 60_000


def test_claim_without_owner_writes_no_owner(fresh_store: TaskStore) -> None:
    dispatch = queued(fresh_store, NOW)
    assert fresh_store.claim(dispatch.task_id, dispatch.gen, NOW, fresh_store.lease_ms) is not None
    assert "ow" not in View(fresh_store).raw(dispatch.task_id)


def test_release_makes_only_the_dead_incarnations_delivering_attempts_due(fresh_store: TaskStore) -> None:
    view = View(fresh_store)
    orphan = claimed_by(fresh_store, DEAD)
    other = claimed_by(fresh_store, ALIVE)
    finished = claimed_by(fresh_store, DEAD)
    [record] = fresh_store.get_many([finished])
    assert fresh_store.settle(finished, record.gen, NOW + 10, Outcome.SUCCEEDED)
    later = NOW + 1_000
    assert fresh_store.release_orphans(DEAD, later) == 1
    assert view.score("inflight", orphan) == later
    assert view.score("inflight", other) == NOW + fresh_store.lease_ms
    assert all(not fresh_store.redis.exists(fresh_store.keys.owned(s, DEAD), fresh_store.keys.holding(s, DEAD))
               for s in range(fresh_store.keys.shards))
    assert fresh_store.release_orphans(DEAD, later) == 0  # a second promoter finds nothing left


def test_released_attempt_is_reissued_with_a_new_generation(fresh_store: TaskStore) -> None:
    orphan = claimed_by(fresh_store, DEAD)
    shard = fresh_store.keys.shard_of(orphan)
    gen = fresh_store.get(orphan).gen
    assert fresh_store.reclaim(shard, NOW + 1_000) == []  # before the release: the lease still runs
    fresh_store.release_orphans(DEAD, NOW + 1_000)
    [dispatch] = fresh_store.reclaim(shard, NOW + 1_000)
    assert dispatch.task_id == orphan and dispatch.gen == gen + 1
    # the dead incarnation's late result is stale, the new message's claim goes through
    assert not fresh_store.settle(orphan, gen, NOW + 1_100, Outcome.SUCCEEDED)
    assert fresh_store.claim_many([(orphan, gen + 1)], NOW + 1_200, fresh_store.lease_ms, owner=ALIVE)


def test_a_reclaimed_and_reclaimed_again_attempt_is_not_released_for_its_first_owner(fresh_store: TaskStore) -> None:
    orphan = claimed_by(fresh_store, DEAD)
    shard = fresh_store.keys.shard_of(orphan)
    expired = NOW + fresh_store.lease_ms + 1
    [dispatch] = fresh_store.reclaim(shard, expired)  # the lease ran out first
    assert fresh_store.claim_many([(orphan, dispatch.gen)], expired, fresh_store.lease_ms, owner=ALIVE)
    assert fresh_store.release_orphans(DEAD, expired + 1) == 0
    assert View(fresh_store).score("inflight", orphan) == expired + fresh_store.lease_ms


def test_old_claims_are_trimmed_from_the_owned_set(fresh_store: TaskStore) -> None:
    first = claimed_by(fresh_store, DEAD)
    shard = fresh_store.keys.shard_of(first)
    later = NOW + HOUR_MS
    for _ in range(50 * fresh_store.keys.shards):  # a second claim in the same shard, after the first's lease
        dispatch = queued(fresh_store, later)
        if fresh_store.keys.shard_of(dispatch.task_id) == shard:
            break
    assert fresh_store.keys.shard_of(dispatch.task_id) == shard
    fresh_store.claim_many([(dispatch.task_id, dispatch.gen)], later, fresh_store.lease_ms, owner=DEAD)
    members = [str(m) for m in fresh_store.redis.zrange(fresh_store.keys.owned(shard, DEAD), 0, -1)]
    assert members == [dispatch.task_id]


def test_a_promoter_pass_releases_and_reissues_in_the_same_pass(fresh_store: TaskStore) -> None:
    """The promoter releases dead workers' attempts before its reclaim, so one pass hands them out again."""
    from httpqueue.worker.promoter import Promoter

    orphan = claimed_by(fresh_store, DEAD)
    published: list[list[str]] = []
    later = NOW + 7_000  # long before the lease runs out
    promoter = Promoter(fresh_store, lambda dispatches, now: published.append([d.task_id for d in dispatches]),
                        clock=lambda: later / 1000, reap=lambda now: fresh_store.release_orphans(DEAD, now))
    report = promoter.run_pass()
    assert (report.released, report.reclaimed) == (1, 1) and published == [[orphan]]
    assert fresh_store.get(orphan).gen == 2


def test_the_node_registry_works_on_this_store(fresh_store: TaskStore) -> None:
    """The registry's scripts touch one slot (its own hash tag), so they run on a Redis Cluster as well."""
    from httpqueue import nodes

    registry = nodes.RedisRegistry(fresh_store.redis, fresh_store.keys)
    gone = nodes.new_identity(nodes.Role.WORKER, "gone@host")
    alive = nodes.new_identity(nodes.Role.API, "127.0.0.1:1")
    registry.beat(gone, 2, ttl=-1)  # expired as soon as written
    registry.beat(alive, 5.5, ttl=30)
    assert [(n.identity, n.load) for n in registry.live()] == [(alive, 5.5)]
    assert registry.departed(nodes.Role.WORKER) == [gone.incarnation]
    registry.remove(nodes.Role.WORKER, gone.incarnation)
    registry.leave(alive)
    assert registry.live() == [] and registry.departed(nodes.Role.WORKER) == []


def held_by(store: TaskStore, owner: str, due: int = NOW) -> str:
    """A queued task whose delivery message ``owner`` holds, not yet due (``hold_many``)."""
    created = store.create(NewTask("t", NOWHERE, "x", due, 0), NOW)
    dispatch = created.dispatch
    if dispatch is None:  # parked: promoted within the horizon
        [dispatch] = store.promote(store.keys.shard_of(created.task_id), max(NOW, due - store.horizon_ms))
    assert store.hold_many(owner, [(dispatch.task_id, dispatch.gen, dispatch.due_ms)], NOW) == 1
    return dispatch.task_id


def test_hold_records_the_held_messages_with_their_generation_until_due_plus_lease(fresh_store: TaskStore) -> None:
    task_id = held_by(fresh_store, DEAD)
    shard = fresh_store.keys.shard_of(task_id)
    record = fresh_store.get(task_id)
    holding = fresh_store.redis.zrange(fresh_store.keys.holding(shard, DEAD), 0, -1, withscores=True)
    assert [(str(m), int(s)) for m, s in holding] == [(f"{task_id}|{record.gen}", record.due_ms + fresh_store.lease_ms)]
    assert fresh_store.redis.pttl(fresh_store.keys.holding(shard, DEAD)) > record.due_ms + fresh_store.lease_ms - NOW


def test_a_task_once_claimed_by_the_dead_worker_and_now_queued_again_is_left_alone(fresh_store: TaskStore) -> None:
    """Its entry in the owned set is of an attempt that is over; another worker holds its new message."""
    task_id = claimed_by(fresh_store, DEAD)
    shard = fresh_store.keys.shard_of(task_id)
    expired = NOW + fresh_store.lease_ms + 1
    [dispatch] = fresh_store.reclaim(shard, expired)  # queued again, under a new generation
    assert fresh_store.release_orphans(DEAD, expired + 1) == 0
    assert View(fresh_store).score("inflight", task_id) != expired + 1


def test_a_held_message_re_issued_since_is_left_alone(fresh_store: TaskStore) -> None:
    """The dead worker's message is stale: the task's current message is another worker's."""
    held = held_by(fresh_store, DEAD)
    shard = fresh_store.keys.shard_of(held)
    expired = NOW + fresh_store.lease_ms + 1
    [dispatch] = fresh_store.reclaim(shard, expired)
    assert dispatch.task_id == held and fresh_store.get(held).state == "queued"
    assert fresh_store.release_orphans(DEAD, expired + 1) == 0


def test_release_hands_out_the_held_messages_of_a_dead_worker_again(fresh_store: TaskStore) -> None:
    held = held_by(fresh_store, DEAD, due=NOW + 5_000)
    shard = fresh_store.keys.shard_of(held)
    gen = fresh_store.get(held).gen
    later = NOW + 1_000
    assert fresh_store.release_orphans(DEAD, later) == 1
    [dispatch] = fresh_store.reclaim(shard, later)
    assert (dispatch.task_id, dispatch.gen) == (held, gen + 1)
    assert dispatch.due_ms == fresh_store.get(held).due_ms  # published for its own due time, not now
    assert fresh_store.claim(held, gen, later, fresh_store.lease_ms) is None  # the dead worker's message is stale


def test_a_clean_stop_releases_held_messages_but_not_attempts(fresh_store: TaskStore) -> None:
    view = View(fresh_store)
    held = held_by(fresh_store, DEAD)
    attempt = claimed_by(fresh_store, DEAD)
    later = NOW + 1_000
    assert fresh_store.release_orphans(DEAD, later, attempts=False) == 1
    assert view.score("inflight", held) == later
    assert view.score("inflight", attempt) == NOW + fresh_store.lease_ms


def test_a_held_task_claimed_since_by_another_worker_is_left_alone(fresh_store: TaskStore) -> None:
    held = held_by(fresh_store, DEAD)
    gen = fresh_store.get(held).gen
    assert fresh_store.claim_many([(held, gen)], NOW + 10, fresh_store.lease_ms, owner=ALIVE)
    assert fresh_store.release_orphans(DEAD, NOW + 1_000) == 0
    assert View(fresh_store).score("inflight", held) == NOW + 10 + fresh_store.lease_ms
