"""The per-shard scripts (promote, reclaim, purge, listing), outcome by outcome, on a real Redis.

A store with one shard makes "the shard" unambiguous; the listing tests use
several shards, since its cursor walks them.
"""
from __future__ import annotations

import typing as t

import pytest

from httpqueue.context import Context
from httpqueue.states import Outcome, State
from httpqueue.store import Dispatch, NewTask, TaskStore
from httpqueue.store import tasks
from httpqueue.store.tasks import HOUR_REACH_MS, MAX_LOST
from tests.support.store import HOUR_MS, NOWHERE, View, delivering, parked, queued, settled

NOW = 1_750_000_000_000


@pytest.fixture
def store(make_context: t.Callable[..., Context]) -> TaskStore:
    """One shard, a batch of 3 (so limits show), the suite's lease (4 s) and horizon (2 s)."""
    return make_context(shards=1, promote_batch=3).store


@pytest.fixture
def view(store: TaskStore) -> View:
    return View(store)


# -- promote ---------------------------------------------------------------------------------------------

def test_promote_hands_out_the_tasks_due_within_the_horizon(store: TaskStore, view: View) -> None:
    horizon = store.horizon_ms
    due = {"early": NOW - 5, "edge": NOW + horizon, "late": NOW + horizon + 1}
    ids = {name: parked(store, NOW - HOUR_MS, topic=name, delay_ms=HOUR_MS + offset - NOW)
           for name, offset in due.items()}
    handed = store.promote(0, NOW)
    assert sorted(handed, key=lambda d: d.due_ms) == [
        Dispatch(ids["early"], 1, due["early"], 0, "early"), Dispatch(ids["edge"], 1, due["edge"], 0, "edge")]
    for name in ("early", "edge"):
        stored = view.raw(ids[name])
        assert stored["st"] == "queued" and stored["gen"] == "1"
        assert view.where(ids[name]) == {"inflight"}
        assert view.score("inflight", ids[name]) == due[name] + store.lease_ms
        assert view.history(ids[name]) == ["promoted"]
    assert view.where(ids["late"]) == {"timer"} and view.raw(ids["late"])["st"] == "scheduled"
    assert view.stats() == {("queued", "early"): 1, ("queued", "edge"): 1, ("scheduled", "late"): 1}
    assert store.promote(0, NOW) == []  # handed out once


def test_promote_takes_at_most_a_batch_per_pass_in_due_order(store: TaskStore, view: View) -> None:
    ids = [parked(store, NOW - HOUR_MS, delay_ms=HOUR_MS - 10 + i) for i in range(5)]
    first = store.promote(0, NOW)
    assert [d.task_id for d in first] == ids[:3]
    assert [d.task_id for d in store.promote(0, NOW)] == ids[3:]


def test_promote_carries_the_retry_count_and_bumps_the_generation(store: TaskStore, view: View) -> None:
    task_id = settled(store, NOW, Outcome.RETRYING, due_ms=NOW + 1_000, max_retry=3)
    [dispatch] = store.promote(0, NOW + 1_000)
    assert dispatch == Dispatch(task_id, 2, NOW + 1_000, 1, "t")
    assert view.raw(task_id)["st"] == "queued" and view.stats() == {("queued", "t"): 1}


def test_promote_drops_timer_entries_of_tasks_that_are_no_longer_waiting(store: TaskStore, view: View) -> None:
    gone = parked(store, NOW)
    live = queued(store, NOW).task_id
    timer = store.keys.timer(0)
    store.redis.delete(store.keys.task(gone))  # its hash vanished (an old leftover)
    store.redis.zadd(timer, {gone: NOW, live: NOW})  # and a queued task wrongly in the timer
    assert store.promote(0, NOW + 10) == []
    assert view.members("timer", 0) == []
    assert view.raw(live)["gen"] == "1" and view.where(live) == {"inflight"}  # untouched


# -- reclaim ---------------------------------------------------------------------------------------------

def test_reclaim_leaves_leases_that_still_run(store: TaskStore, view: View) -> None:
    dispatch = queued(store, NOW)
    expiry = t.cast(int, view.score("inflight", dispatch.task_id))
    assert store.reclaim(0, expiry - 1) == []
    assert view.raw(dispatch.task_id)["gen"] == "1"


def test_reclaim_reissues_a_queued_task_with_a_doubling_lease(store: TaskStore, view: View) -> None:
    dispatch = queued(store, NOW - 100)
    expiry = NOW - 100 + store.lease_ms
    [again] = store.reclaim(0, expiry)
    assert again == Dispatch(dispatch.task_id, 2, expiry, 0, "t")  # due is the later of due and now
    stored = view.raw(dispatch.task_id)
    assert stored["st"] == "queued" and stored["rq"] == "1" and "lost" not in stored and "le" not in stored
    assert view.score("inflight", dispatch.task_id) == expiry + 2 * store.lease_ms
    assert view.stats() == {("queued", "t"): 1}
    assert view.history(dispatch.task_id) == ["lease_expired"]
    waits, clock = [], expiry + 2 * store.lease_ms
    for _ in range(6):
        store.reclaim(0, clock)
        score = t.cast(int, view.score("inflight", dispatch.task_id))
        waits.append((score - clock) // store.lease_ms)
        clock = score
    assert waits == [4, 8, 16, 32, 32, 32]  # capped at 32 leases; never failed for it
    assert view.raw(dispatch.task_id)["st"] == "queued"


def test_reclaim_reissues_a_lost_attempt_and_counts_it(store: TaskStore, view: View) -> None:
    dispatch = delivering(store, NOW)
    expiry = NOW + store.lease_ms
    [again] = store.reclaim(0, expiry)
    assert again.task_id == dispatch.task_id and again.gen == dispatch.gen + 1
    stored = view.raw(dispatch.task_id)
    assert stored["st"] == "queued" and stored["lost"] == "1" and "attempt lost" in stored["le"]
    assert "rq" not in stored and stored["at"] == "1"
    assert view.score("inflight", dispatch.task_id) == expiry + store.lease_ms  # no backoff for a lost attempt
    assert view.stats() == {("queued", "t"): 1}


def test_reclaim_fails_a_task_lost_more_than_max_lost_times(store: TaskStore, view: View) -> None:
    dispatch = delivering(store, NOW)
    task_id, clock, gen = dispatch.task_id, NOW, dispatch.gen
    for lost in range(1, MAX_LOST + 1):
        clock = t.cast(int, view.score("inflight", task_id))
        [again] = store.reclaim(0, clock)
        assert view.raw(task_id)["lost"] == str(lost)
        gen = again.gen
        assert store.claim(task_id, gen, clock, store.lease_ms) is not None
    clock = t.cast(int, view.score("inflight", task_id))
    assert store.reclaim(0, clock) == []  # lost once more: fails for good instead of looping
    stored = view.raw(task_id)
    assert stored["st"] == "failed" and stored["fin"] == str(clock)
    assert stored["lost"] == str(MAX_LOST + 1) and f"{MAX_LOST + 1} times" in stored["le"]
    assert stored["gen"] == str(gen)  # not re-issued
    assert view.where(task_id) == {"dead"} and view.score("dead", task_id) == clock + store.dead_retention_ms
    assert view.stats() == {("failed", "t"): 1}
    assert store.settle(task_id, gen, clock + 1, Outcome.SUCCEEDED) is False  # the lost attempt cannot revive it


def test_reclaim_drops_in_flight_entries_of_tasks_that_moved_on(store: TaskStore, view: View) -> None:
    done = settled(store, NOW, Outcome.SUCCEEDED)
    store.redis.zadd(store.keys.inflight(0), {done: NOW, "vanished": NOW})
    assert store.reclaim(0, NOW + 1) == []
    assert view.members("inflight", 0) == [] and view.raw(done)["st"] == "succeeded"
    assert view.stats() == {("succeeded", "t"): 1}


def test_reclaim_takes_at_most_a_batch(store: TaskStore) -> None:
    for _ in range(5):
        queued(store, NOW)
    assert len(store.reclaim(0, NOW + store.lease_ms)) == 3
    assert len(store.reclaim(0, NOW + store.lease_ms)) == 2


# -- purge -----------------------------------------------------------------------------------------------

def test_purge_forgets_finished_tasks_and_dead_letters_after_their_retention(store: TaskStore, view: View) -> None:
    succeeded = settled(store, NOW, Outcome.SUCCEEDED)
    deleted = parked(store, NOW, topic="u")
    store.delete(deleted, NOW)
    failed = settled(store, NOW, Outcome.FAILED)
    kept = parked(store, NOW)
    retention, dead_retention = store.retention_ms, store.dead_retention_ms
    assert dead_retention > retention
    assert store.purge(0, NOW + retention - 1) == 0
    assert store.purge(0, NOW + retention) == 2
    for task_id in (succeeded, deleted):
        assert view.raw(task_id) == {} and view.history(task_id) == [] and view.where(task_id) == set()
    assert view.stats() == {("failed", "t"): 1, ("scheduled", "t"): 1}
    assert store.purge(0, NOW + dead_retention) == 1
    assert view.raw(failed) == {} and view.where(failed) == set()
    assert view.stats() == {("scheduled", "t"): 1} and view.raw(kept)["st"] == "scheduled"


def test_purge_of_an_entry_without_its_hash_removes_it_and_counts_nothing(store: TaskStore, view: View) -> None:
    settled(store, NOW, Outcome.SUCCEEDED)
    store.redis.zadd(store.keys.done(0), {"vanished": NOW})
    assert store.purge(0, NOW + 1) == 1
    assert view.members("done", 0) != [] and "vanished" not in view.members("done", 0)
    assert view.stats() == {("succeeded", "t"): 1}


# -- listing ---------------------------------------------------------------------------------------------

@pytest.fixture
def sharded(make_context: t.Callable[..., Context]) -> TaskStore:
    return make_context(shards=4).store


def walk(store: TaskStore, limit: int, after: str | None = None, **filters: t.Any) -> tuple[list[str], int]:
    """Every id the listing yields, page by page (from the cursor ``after``, or the start); and how many pages."""
    seen: list[str] = []
    cursor, pages = after, 0
    while True:
        page = store.list_tasks(cursor=cursor, limit=limit, **filters)
        pages += 1
        assert len(page.tasks) <= limit
        seen += [task.id for task in page.tasks]
        cursor = page.cursor
        if cursor is None:
            return seen, pages
        assert pages < 100


def test_listing_filters_by_state_and_topic_across_every_set(sharded: TaskStore) -> None:
    mine = {
        State.SCHEDULED: {parked(sharded, NOW, topic="a") for _ in range(3)} | {settled(sharded, NOW, Outcome.HELD,
                                                                                         topic="a")},
        State.QUEUED: {queued(sharded, NOW, topic="a").task_id},
        State.DELIVERING: {delivering(sharded, NOW, topic="a").task_id},
        State.RETRYING: {settled(sharded, NOW, Outcome.RETRYING, topic="a", max_retry=1)},
        State.SUCCEEDED: {settled(sharded, NOW, Outcome.SUCCEEDED, topic="a")},
        State.FAILED: {settled(sharded, NOW, Outcome.FAILED, topic="a")},
    }
    mine[State.DELETED] = {d := parked(sharded, NOW, topic="a")}
    sharded.delete(d, NOW)
    others = {parked(sharded, NOW, topic="b"), settled(sharded, NOW, Outcome.FAILED, topic="b")}
    everything, _ = walk(sharded, 2)
    assert sorted(everything) == sorted(set().union(*mine.values(), others))  # each once
    for state, ids in mine.items():
        listed, _ = walk(sharded, 2, state=state, topic="a")
        assert sorted(listed) == sorted(ids), state
        assert all(task.state is state for task in sharded.get_many(listed))
    listed, _ = walk(sharded, 10, topic="b")
    assert sorted(listed) == sorted(others)


def test_listing_pages_hold_at_most_limit_and_see_each_task_once(sharded: TaskStore) -> None:
    ids = [parked(sharded, NOW, delay_ms=HOUR_MS + i) for i in range(23)]
    listed, pages = walk(sharded, 5, topic="t")
    assert sorted(listed) == sorted(ids) and pages >= 5


def test_listing_shows_finished_tasks_newest_first(make_context: t.Callable[..., Context]) -> None:
    store = make_context(shards=1).store
    ids = [settled(store, NOW + i * 1_000, Outcome.SUCCEEDED) for i in range(4)]
    listed, _ = walk(store, 10, state=State.SUCCEEDED)
    assert listed == ids[::-1]
    timer = [parked(store, NOW, delay_ms=HOUR_MS - i) for i in range(3)]
    listed, _ = walk(store, 10, state=State.SCHEDULED)
    assert listed == timer[::-1]  # the timer in due order: soonest first


def test_listing_budget_bounds_one_page_and_the_cursor_resumes(make_context: t.Callable[..., Context]) -> None:
    store = make_context(shards=1).store
    store.create_many([NewTask("noise", NOWHERE, i, NOW + HOUR_MS + i, 0) for i in range(30)], NOW)
    wanted = parked(store, NOW, topic="needle", delay_ms=2 * HOUR_MS)
    page = store.list_tasks(topic="needle", limit=5, budget=10)
    assert page.tasks == [] and page.cursor is not None  # looked at 10 entries, found nothing yet
    seen: list[str] = []
    cursor: str | None = page.cursor
    while cursor is not None:
        page = store.list_tasks(topic="needle", limit=5, budget=10, cursor=cursor)
        seen += [task.id for task in page.tasks]
        cursor = page.cursor
    assert seen == [wanted]


@pytest.mark.parametrize("cursor", ["x", "1.2", "1.2.-3", "a.b.c", "0.3.934097055349855507101371750"])
def test_listing_refuses_a_malformed_cursor(fresh_store: TaskStore, cursor: str) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        fresh_store.list_tasks(cursor=cursor)


@pytest.mark.parametrize("offset", [10**14, 2**53])
def test_a_cursor_far_past_the_end_of_its_set_lists_nothing_there(store: TaskStore, offset: int) -> None:
    parked(store, NOW)  # in the one shard's timer
    far(store)  # in its hour lists, listed after the timer
    settled(store, NOW, Outcome.FAILED)
    assert [t.state for t in store.list_tasks(state=State.SCHEDULED, cursor=f"0.0.{offset}").tasks] == [
        State.SCHEDULED]  # the far one: the hour lists start from their first entry
    assert store.list_tasks(state=State.SCHEDULED, cursor=f"1.0.{offset}").tasks == []
    assert store.list_tasks(state=State.FAILED, cursor=f"0.0.{offset}").tasks == []  # listed newest first


# -- hour lists (far-future tasks) -----------------------------------------------------------------------

NEAR_HOUR = (NOW + HOUR_REACH_MS) // HOUR_MS
"""The last hour whose tasks go to the timer when created at ``NOW``; later hours are far."""

FAR_HOUR = NEAR_HOUR + 2


def far(store: TaskStore, hour: int = FAR_HOUR, offset_ms: int = 0, topic: str = "t") -> str:
    """A task created at ``NOW`` due ``offset_ms`` into ``hour``."""
    return parked(store, NOW, topic=topic, delay_ms=hour * HOUR_MS + offset_ms - NOW)


def moved_at(hour: int) -> int:
    """The first time a promoter pass moves ``hour``'s list into the timer."""
    return hour * HOUR_MS - HOUR_REACH_MS


def hour_list(store: TaskStore, hour: int, shard: int = 0) -> list[str]:
    return [str(i) for i in store.redis.lrange(store.keys.hour_list(shard, hour), 0, -1)]


def test_a_far_task_waits_in_its_hour_list_not_in_the_timer(store: TaskStore, view: View) -> None:
    ids = [far(store, offset_ms=500), far(store, offset_ms=100), far(store, FAR_HOUR + 1)]
    assert hour_list(store, FAR_HOUR) == ids[:2]  # creation order, not due order
    assert hour_list(store, FAR_HOUR + 1) == ids[2:]
    assert [int(h) for h in store.redis.zrange(store.keys.hours(0), 0, -1)] == [FAR_HOUR, FAR_HOUR + 1]
    assert view.members("timer", 0) == []
    assert all(view.where(i) == {"hours"} for i in ids)
    assert view.raw(ids[0])["st"] == "scheduled" and "gen" not in view.raw(ids[0])
    assert view.stats() == {("scheduled", "t"): 3}  # counted as any parked task
    assert store.get(ids[1]).execute_ms == FAR_HOUR * HOUR_MS + 100


def test_a_task_due_in_the_last_near_hour_goes_to_the_timer(store: TaskStore, view: View) -> None:
    last_near = far(store, NEAR_HOUR, HOUR_MS - 1)
    first_far = far(store, NEAR_HOUR + 1)
    assert view.where(last_near) == {"timer"} and view.score("timer", last_near) == (NEAR_HOUR + 1) * HOUR_MS - 1
    assert view.where(first_far) == {"hours"} and hour_list(store, NEAR_HOUR + 1) == [first_far]


def test_a_promoter_pass_moves_an_hour_into_the_timer_once_it_is_within_reach(store: TaskStore,
                                                                             view: View) -> None:
    ids = [far(store, offset_ms=n) for n in (300, 100, 200)]
    later = far(store, FAR_HOUR + 1)
    assert store.promote(0, moved_at(FAR_HOUR) - 1) == [] and view.members("timer", 0) == []
    assert store.promote(0, moved_at(FAR_HOUR)) == []  # moved, not due yet
    assert view.members("timer", 0) == [ids[1], ids[2], ids[0]]  # in due order now
    assert all(view.score("timer", i) == FAR_HOUR * HOUR_MS + n for i, n in zip(ids, (300, 100, 200)))
    assert not store.redis.exists(store.keys.hour_list(0, FAR_HOUR))
    assert [int(h) for h in store.redis.zrange(store.keys.hours(0), 0, -1)] == [FAR_HOUR + 1]
    assert view.where(later) == {"hours"}
    handed = store.promote(0, FAR_HOUR * HOUR_MS + 300)
    assert sorted(handed, key=lambda d: d.due_ms) == [
        Dispatch(i, 1, FAR_HOUR * HOUR_MS + n, 0, "t") for i, n in zip((ids[1], ids[2], ids[0]), (100, 200, 300))]
    assert store.promote(0, FAR_HOUR * HOUR_MS + 300) == []  # handed out once
    assert all(view.where(i) == {"inflight"} and view.history(i) == ["promoted"] for i in ids)
    assert view.stats() == {("queued", "t"): 3, ("scheduled", "t"): 1}


def test_a_promoter_behind_moves_and_promotes_an_overdue_hour_in_one_pass(store: TaskStore, view: View) -> None:
    task_id = far(store, offset_ms=10)
    [dispatch] = store.promote(0, FAR_HOUR * HOUR_MS + HOUR_MS)  # no promoter ran for hours
    assert dispatch == Dispatch(task_id, 1, FAR_HOUR * HOUR_MS + 10, 0, "t")
    assert view.where(task_id) == {"inflight"} and store.redis.zcard(store.keys.hours(0)) == 0


def test_the_move_skips_deleted_requeued_and_vanished_tasks(store: TaskStore, view: View) -> None:
    kept, deleted, requeued, vanished = (far(store, offset_ms=n) for n in range(4))
    store.delete(deleted, NOW + 1)
    store.requeue(requeued, NOW + 1)
    [first] = store.promote(0, NOW + 1)
    assert first.task_id == requeued and first.gen == 1
    store.redis.delete(store.keys.task(vanished))
    assert hour_list(store, FAR_HOUR) == [kept, deleted, requeued, vanished]  # a delete leaves its entry
    assert store.promote(0, moved_at(FAR_HOUR)) == []
    assert view.members("timer", 0) == [kept]
    assert view.where(deleted) == {"done"} and view.raw(deleted)["st"] == "deleted"
    assert view.where(requeued) == {"inflight"} and view.raw(requeued)["gen"] == "1"  # not moved again
    assert store.redis.zcard(store.keys.hours(0)) == 0


def test_a_big_hour_is_moved_in_bounded_passes_in_creation_order(store: TaskStore, view: View,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "HOUR_MOVE_LIMIT", 3)
    ids = [far(store, offset_ms=60_000 - n) for n in range(7)] + [far(store, FAR_HOUR + 1)]  # none due yet
    moves = []
    for _ in range(4):
        store.promote(0, moved_at(FAR_HOUR + 1))
        moves.append(len(view.members("timer", 0)))
        if len(moves) == 1:
            assert set(view.members("timer", 0)) == set(ids[:3]) and hour_list(store, FAR_HOUR) == ids[3:7]
    assert moves == [3, 6, 8, 8]  # 3 of the first hour, 3 more, its last one and the next hour's
    assert sorted(view.members("timer", 0)) == sorted(ids) and store.redis.zcard(store.keys.hours(0)) == 0


def test_listing_walks_the_hour_lists_after_the_timer_with_working_cursors(sharded: TaskStore) -> None:
    near = [parked(sharded, NOW, delay_ms=HOUR_MS + i) for i in range(5)]
    later = [far(sharded, FAR_HOUR + 1) for _ in range(6)]
    first = [far(sharded, offset_ms=HOUR_MS - 1 - i) for i in range(6)]
    gone = far(sharded)
    sharded.delete(gone, NOW)
    moved = far(sharded)
    sharded.requeue(moved, NOW)  # in the timer now (due at once), its list entry stale
    listed, pages = walk(sharded, 2, state=State.SCHEDULED)
    assert sorted(listed) == sorted(near + later + first + [moved]) and pages >= 7  # each once
    by_shard: dict[int, list[str]] = {}
    for task_id in listed:
        by_shard.setdefault(sharded.keys.shard_of(task_id), []).append(task_id)
    timer = set(near + [moved])
    for shard, ids in by_shard.items():  # a shard's timer, then its hours in hour order, each in list order
        in_timer = [i for i in ids if i in timer]
        assert ids == in_timer + [i for i in first + later if sharded.keys.shard_of(i) == shard], shard
    everything, _ = walk(sharded, 3)
    assert sorted(everything) == sorted(near + later + first + [moved, gone])  # the deleted one only as deleted
    assert walk(sharded, 4, state=State.RETRYING)[0] == []


def test_a_listing_cursor_in_an_hour_list_survives_the_hour_being_moved(store: TaskStore) -> None:
    first = [far(store) for _ in range(3)]
    later = [far(store, FAR_HOUR + 1) for _ in range(3)]
    page = store.list_tasks(state=State.SCHEDULED, limit=4)
    assert [task.id for task in page.tasks] == first + later[:1] and page.cursor is not None
    store.promote(0, moved_at(FAR_HOUR))  # the first hour goes to the timer; the cursor points into the next
    rest, _ = walk(store, 4, page.cursor, state=State.SCHEDULED)
    assert rest == later[1:]

