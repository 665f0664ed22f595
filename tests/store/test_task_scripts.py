"""The scripts that change one task (create, claim, settle, delete, requeue), outcome by outcome.

Each test drives the script through :class:`TaskStore` on the suite's real Redis
(a fresh key prefix per test) and then reads what is stored straight from
Redis through :class:`Keys`: the task's hash, the sets of its shard that hold
it, the statistics hashes and the history list.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import typing as t

import pytest

from httpqueue.exceptions import TaskConflict, TaskNotFound
from httpqueue.states import Outcome, State
from httpqueue.store import Changed, Created, Dispatch, NewTask, Settlement, TaskStore
from httpqueue.store.scripts import ScriptCalls
from tests.support.store import HOUR_MS, HOURS, NOWHERE, View, delivering, parked, queued, settled

NOW = 1_750_000_000_000
"""The store's clock in these tests: times are arguments, so a fixed instant keeps every number exact."""


@pytest.fixture
def view(fresh_store: TaskStore) -> View:
    return View(fresh_store)


# -- create ----------------------------------------------------------------------------------------------

def test_create_parks_a_task_due_after_the_direct_window(fresh_store: TaskStore, view: View) -> None:
    due = NOW + fresh_store.direct_ms + 1
    created = fresh_store.create(NewTask("t", NOWHERE, {"a": [1]}, due, 0), NOW)
    assert created == Created(created.task_id, None)
    # only the fields a parked task needs: no generation, no 'ex' until the due time moves, no 'mr' when 0
    assert view.raw(created.task_id) == {"tp": "t", "cb": NOWHERE, "ct": '{"a":[1]}', "due": str(due),
                                         "cr": str(NOW), "st": "scheduled"}
    assert view.where(created.task_id) == {"timer"} and view.score("timer", created.task_id) == due
    assert view.stats() == fresh_store.counts() == {("scheduled", "t"): 1}
    assert view.history(created.task_id) == []
    record = fresh_store.get(created.task_id)
    assert record.state is State.SCHEDULED and record.execute_ms == record.due_ms == due and record.gen == 0


@pytest.mark.parametrize("offset", ["direct", "now", "past"])
def test_create_queues_a_task_due_within_the_direct_window(fresh_store: TaskStore, view: View, offset: str) -> None:
    due = {"direct": NOW + fresh_store.direct_ms, "now": NOW, "past": NOW - 60_000}[offset]
    created = fresh_store.create(NewTask("t", NOWHERE, "x", due, 2), NOW)
    assert created.dispatch == Dispatch(created.task_id, 1, due, 0, "t")
    stored = view.raw(created.task_id)
    assert stored["st"] == "queued" and stored["gen"] == "1" and stored["mr"] == "2"
    # the caller publishes the message; the lease covers a caller that dies before it does
    assert view.where(created.task_id) == {"inflight"}
    assert view.score("inflight", created.task_id) == due + fresh_store.lease_ms
    assert view.stats() == {("queued", "t"): 1}


def test_create_stores_options_timeout_and_fingerprint(fresh_store: TaskStore, view: View) -> None:
    options = {"timeout": 1.5, "method": "PUT", "headers": {"X-A": "1"}}
    task_id = parked(fresh_store, NOW, options=options, fingerprint="fp-1", max_retry=3)
    stored = view.raw(task_id)
    assert json.loads(stored["opt"]) == options and stored["to"] == "1500"
    assert stored["fp"].partition("|")[0] == "fp-1" and stored["mr"] == "3"  # with the mark of the call that wrote it
    assert fresh_store.get(task_id).options == options


def test_create_with_a_taken_id_replays_or_conflicts_by_fingerprint(fresh_store: TaskStore, view: View) -> None:
    first = NewTask("t", NOWHERE, "x", NOW + HOUR_MS, 0, task_id="order-1", fingerprint="fp-1")
    assert fresh_store.create(first, NOW) == Created("order-1", None)
    before = view.raw("order-1")
    assert fresh_store.create(first, NOW + 5) == Created("order-1", None, replayed=True)
    for other in (NewTask("t", NOWHERE, "y", NOW + 1, 0, task_id="order-1", fingerprint="fp-2"),
                  NewTask("t", NOWHERE, "x", NOW + HOUR_MS, 0, task_id="order-1")):
        with pytest.raises(TaskConflict):
            fresh_store.create(other, NOW + 5)
    assert view.raw("order-1") == before and view.stats() == {("scheduled", "t"): 1}
    # an id taken without a fingerprint is never a replay (by another request: see the test below for the same one)
    plain = parked(fresh_store, NOW)
    with pytest.raises(TaskConflict):
        fresh_store.create(NewTask("t", NOWHERE, "x", NOW + HOUR_MS, 0, task_id=plain, fingerprint=""), NOW + 5)
    with pytest.raises(TaskConflict):
        fresh_store.create(NewTask("t", NOWHERE, "x", NOW + HOUR_MS, 0, task_id=plain, fingerprint="fp"), NOW)


@pytest.mark.parametrize("fingerprint", ["", "fp-1"])
def test_a_create_run_twice_by_a_retry_is_one_create(fresh_store: TaskStore, view: View, fingerprint: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry re-sends a create whose reply was lost: the second run finds the first one's task, and that is
    this create's own result (queued ones handed out again at generation 1), not a conflict nor a replay."""
    original = ScriptCalls.execute

    def reply_lost_then_sent_again(self: ScriptCalls) -> list[t.Any]:
        original(self)
        return original(self)

    later = NewTask("t", NOWHERE, {"a": 1}, NOW + HOUR_MS, 0, task_id=f"later-{fingerprint}", fingerprint=fingerprint)
    now = NewTask("t", NOWHERE, "x", NOW, 0, task_id=f"now-{fingerprint}", fingerprint=fingerprint)
    monkeypatch.setattr(ScriptCalls, "execute", reply_lost_then_sent_again)
    results = fresh_store.create_many([later, now], NOW)
    monkeypatch.undo()
    assert results == [Created(later.task_id, None), Created(now.task_id, Dispatch(now.task_id, 1, NOW, 0, "t"))]
    assert view.stats() == {("scheduled", "t"): 1, ("queued", "t"): 1}
    if fingerprint:  # another request with the same key is a replay, even within the same millisecond
        assert fresh_store.create_many([later], NOW) == [Created(later.task_id, None, replayed=True)]
    other = dataclasses.replace(later, content={"a": 2})
    with pytest.raises(TaskConflict) if not fingerprint else contextlib.nullcontext():
        fresh_store.create(other, NOW)  # a different task under the same id, same millisecond: not this create


def test_create_many_returns_conflicts_in_place(fresh_store: TaskStore, view: View) -> None:
    taken = parked(fresh_store, NOW)
    results = fresh_store.create_many([NewTask("t", NOWHERE, 1, NOW + HOUR_MS, 0),
                                       NewTask("t", NOWHERE, 2, NOW + HOUR_MS, 0, task_id=taken),
                                       NewTask("u", NOWHERE, 3, NOW, 0)], NOW)
    assert isinstance(results[0], Created) and results[0].dispatch is None
    assert isinstance(results[1], TaskConflict)
    assert isinstance(results[2], Created) and results[2].dispatch is not None
    assert view.stats() == {("scheduled", "t"): 2, ("queued", "u"): 1}


def test_a_mixed_batch_is_stored_as_the_same_tasks_created_one_by_one(fresh_store: TaskStore,
                                                                      view: View) -> None:
    """create.lua groups a call's shared writes (one RPUSH per hour list, one ZADD per set, one HINCRBY per
    state and topic): every task still ends up where, and counted as, a create of its own would put it."""
    far = NOW + 3 * 24 * HOUR_MS  # beyond the timer's reach: hour lists
    shard = 0
    ids = [f"mix{n}" for n in range(400)]
    ids = [task_id for task_id in ids if fresh_store.keys.shard_of(task_id) == shard][:24]
    assert len(ids) == 24
    plan = [(NOW, "a"), (NOW + HOUR_MS, "a"), (far, "b"), (far + 2 * HOUR_MS, "b"), (far + 10, "a"), (NOW, "b")] * 4
    tasks = [NewTask(topic, NOWHERE, n, due, 0, task_id=task_id) for n, (task_id, (due, topic)) in
             enumerate(zip(ids, plan))]
    # the last item repeats an id of the same call with other content: a conflict, nothing overwritten
    results = fresh_store.create_many(tasks + [dataclasses.replace(tasks[1], content="other")], NOW)
    assert all(isinstance(r, Created) for r in results[:-1]) and isinstance(results[-1], TaskConflict)
    hour_lists: dict[int, list[str]] = {}
    for task, result in zip(tasks, results):
        assert isinstance(result, Created) and result.task_id == task.task_id
        stored = view.raw(task.task_id)
        assert stored["due"] == str(task.due_ms) and stored["tp"] == task.topic
        if task.due_ms == NOW:
            assert result.dispatch == Dispatch(task.task_id, 1, NOW, 0, task.topic)
            assert stored["st"] == "queued" and view.score("inflight", task.task_id) == NOW + fresh_store.lease_ms
        elif task.due_ms == NOW + HOUR_MS:
            assert result.dispatch is None and view.where(task.task_id) == {"timer"}
            assert view.score("timer", task.task_id) == task.due_ms
        else:
            assert result.dispatch is None and view.where(task.task_id) == {HOURS}
            hour_lists.setdefault(task.due_ms // HOUR_MS, []).append(str(task.task_id))
    client = fresh_store.redis
    for hour, in_order in hour_lists.items():  # each hour's list in the batch's order
        assert client.lrange(fresh_store.keys.hour_list(shard, hour), 0, -1) == in_order
    assert sorted(int(h) for h in client.zrange(fresh_store.keys.hours(shard), 0, -1)) == sorted(hour_lists)
    assert view.stats() == {("queued", "a"): 4, ("queued", "b"): 4, ("scheduled", "a"): 8,
                            ("scheduled", "b"): 8}


# -- claim -----------------------------------------------------------------------------------------------

def test_claim_starts_an_attempt_with_a_lease_and_resets_the_reissue_backoff(fresh_store: TaskStore,
                                                                           view: View) -> None:
    first = queued(fresh_store, NOW)
    expiry = t.cast(int, view.score("inflight", first.task_id))
    [again] = fresh_store.reclaim(fresh_store.keys.shard_of(first.task_id), expiry)  # message not taken in time
    assert view.raw(first.task_id)["rq"] == "1"
    record = fresh_store.claim(again.task_id, again.gen, NOW + 10, 6_000)
    assert record is not None and record.state is State.DELIVERING and record.attempts == 1 and record.gen == 2
    stored = view.raw(first.task_id)
    assert stored["st"] == "delivering" and stored["at"] == "1" and "rq" not in stored
    assert view.where(first.task_id) == {"inflight"} and view.score("inflight", first.task_id) == NOW + 10 + 6_000
    assert view.stats() == {("delivering", "t"): 1}


def test_claim_leases_a_task_with_its_own_timeout_for_that_timeout_plus_extra(fresh_store: TaskStore,
                                                                             view: View) -> None:
    own = queued(fresh_store, NOW, options={"timeout": 1.5})
    plain = queued(fresh_store, NOW)
    claimed = fresh_store.claim_many([(own.task_id, own.gen), (plain.task_id, plain.gen)], NOW, 6_000, extra_ms=100)
    assert [r.id for r in claimed] == [own.task_id, plain.task_id]
    assert view.score("inflight", own.task_id) == NOW + 1_500 + 100
    assert view.score("inflight", plain.task_id) == NOW + 6_000


def _scheduled(store: TaskStore) -> tuple[str, int]:
    return parked(store, NOW), 0


def _stale_gen(store: TaskStore) -> tuple[str, int]:
    dispatch = queued(store, NOW)
    return dispatch.task_id, dispatch.gen + 1


def _claimed(store: TaskStore) -> tuple[str, int]:
    dispatch = delivering(store, NOW)
    return dispatch.task_id, dispatch.gen


def _finished(store: TaskStore) -> tuple[str, int]:
    dispatch = delivering(store, NOW)
    store.settle(dispatch.task_id, dispatch.gen, NOW, Outcome.SUCCEEDED)
    return dispatch.task_id, dispatch.gen


def _deleted(store: TaskStore) -> tuple[str, int]:
    dispatch = queued(store, NOW)
    store.delete(dispatch.task_id, NOW)
    return dispatch.task_id, dispatch.gen


@pytest.mark.parametrize("make", [_scheduled, _stale_gen, _claimed, _finished, _deleted],
                         ids=["scheduled", "stale-gen", "already-delivering", "succeeded", "deleted"])
def test_claim_drops_a_stale_message_and_changes_nothing(fresh_store: TaskStore, view: View,
                                                         make: t.Callable[[TaskStore], tuple[str, int]]) -> None:
    task_id, gen = make(fresh_store)
    before = (view.raw(task_id), view.where(task_id), view.stats())
    assert fresh_store.claim(task_id, gen, NOW + 1, 6_000) is None
    assert (view.raw(task_id), view.where(task_id), view.stats()) == before


def test_claim_of_a_missing_task_is_dropped(fresh_store: TaskStore, view: View) -> None:
    assert fresh_store.claim("no-such-task", 1, NOW, 6_000) is None
    assert view.raw("no-such-task") == {} and view.stats() == {}


def test_claim_many_returns_only_the_current_messages(fresh_store: TaskStore) -> None:
    good, stale = queued(fresh_store, NOW), queued(fresh_store, NOW)
    claimed = fresh_store.claim_many([(good.task_id, good.gen), (stale.task_id, 7), ("missing", 1)], NOW, 6_000)
    assert [r.id for r in claimed] == [good.task_id]


# -- settle ----------------------------------------------------------------------------------------------

RETRY_AT = NOW + 10_000


@pytest.mark.parametrize("outcome, state, where, fields", [
    (Outcome.SUCCEEDED, "succeeded", "done", {"fin": str(NOW + 100), "lc": "500", "le": "boom", "at": "1"}),
    (Outcome.FAILED, "failed", "dead", {"fin": str(NOW + 100), "lc": "500", "le": "boom", "at": "1"}),
    (Outcome.RETRYING, "retrying", "timer", {"hr": "1", "due": str(RETRY_AT), "ex": str(NOW), "at": "1"}),
    (Outcome.THROTTLED, "retrying", "timer", {"th": "1", "due": str(RETRY_AT), "ex": str(NOW), "at": "1"}),
    (Outcome.DEFERRED, "scheduled", "timer", {"due": str(RETRY_AT), "ex": str(NOW), "at": "0"}),
    (Outcome.HELD, "scheduled", "held", {"due": str(NOW), "at": "0"}),
])
def test_settle_records_each_outcome(fresh_store: TaskStore, view: View, outcome: Outcome, state: str,
                                     where: str, fields: dict[str, str]) -> None:
    dispatch = delivering(fresh_store, NOW)
    task_id = dispatch.task_id
    event = {"event": "attempt", "outcome": outcome.value}
    assert fresh_store.settle(task_id, dispatch.gen, NOW + 100, outcome, due_ms=RETRY_AT, code=500, error="boom",
                              event=event) is True
    stored = view.raw(task_id)
    assert stored["st"] == state
    assert {name: stored.get(name) for name in fields} == fields
    assert view.where(task_id) == {where}
    expected_score = {"done": NOW + 100 + fresh_store.retention_ms, "dead": NOW + 100 + fresh_store.dead_retention_ms,
                      "timer": RETRY_AT, "held": NOW}[where]
    assert view.score(where, task_id) == expected_score
    assert view.stats() == {(state, "t"): 1}
    assert view.history(task_id) == ["attempt"]
    if outcome in (Outcome.DEFERRED, Outcome.HELD):  # not an attempt: no code, error or counters recorded
        assert not {"lc", "le", "hr", "th", "fin"} & stored.keys()
    if outcome is Outcome.THROTTLED:
        assert "hr" not in stored  # a code-101 answer is not a failure


@pytest.mark.parametrize("outcome", [Outcome.DEFERRED, Outcome.HELD])
def test_turned_away_retrying_task_stays_retrying(fresh_store: TaskStore, view: View, outcome: Outcome) -> None:
    task_id = settled(fresh_store, NOW, Outcome.RETRYING, due_ms=NOW + 1_000, max_retry=3)
    [again] = fresh_store.promote(fresh_store.keys.shard_of(task_id), NOW + 1_000)
    assert fresh_store.claim(task_id, again.gen, NOW + 1_000, 6_000) is not None
    assert fresh_store.settle(task_id, again.gen, NOW + 1_000, outcome, due_ms=NOW + 2_000)
    stored = view.raw(task_id)
    assert stored["st"] == "retrying" and stored["hr"] == "1" and stored["at"] == "1"
    assert view.stats() == {("retrying", "t"): 1}


@pytest.mark.parametrize("outcome", [Outcome.RETRYING, Outcome.THROTTLED, Outcome.DEFERRED])
def test_settle_refuses_to_park_a_task_without_a_next_time(fresh_store: TaskStore, view: View,
                                                          outcome: Outcome) -> None:
    """A parked outcome with no due time would park the task at the epoch: refused before Redis sees it."""
    dispatch = delivering(fresh_store, NOW)
    with pytest.raises(ValueError, match="due_ms"):
        fresh_store.settle(dispatch.task_id, dispatch.gen, NOW, outcome)
    assert view.raw(dispatch.task_id)["st"] == "delivering"


def test_settle_keeps_a_reserved_slot_only_until_the_next_settle(fresh_store: TaskStore, view: View) -> None:
    dispatch = delivering(fresh_store, NOW)
    slot = NOW + 700
    assert fresh_store.settle_many([Settlement(dispatch.task_id, dispatch.gen, NOW, Outcome.DEFERRED,
                                               due_ms=slot, slot_ms=slot)]) == [True]
    assert view.raw(dispatch.task_id)["sl"] == str(slot) and fresh_store.get(dispatch.task_id).slot_ms == slot
    [again] = fresh_store.promote(fresh_store.keys.shard_of(dispatch.task_id), slot)
    assert fresh_store.claim(dispatch.task_id, again.gen, slot, 6_000) is not None
    assert fresh_store.settle(dispatch.task_id, again.gen, slot, Outcome.SUCCEEDED, code=100)
    assert "sl" not in view.raw(dispatch.task_id)


def test_settle_clears_the_last_code_and_error_it_is_not_given(fresh_store: TaskStore, view: View) -> None:
    task_id = settled(fresh_store, NOW, Outcome.RETRYING, due_ms=NOW + 1_000, max_retry=1)
    assert view.raw(task_id)["lc"] == "500" and view.raw(task_id)["le"] == "boom"
    [again] = fresh_store.promote(fresh_store.keys.shard_of(task_id), NOW + 1_000)
    assert fresh_store.claim(task_id, again.gen, NOW + 1_000, 6_000) is not None
    assert fresh_store.settle(task_id, again.gen, NOW + 1_100, Outcome.SUCCEEDED)
    stored = view.raw(task_id)
    assert "lc" not in stored and "le" not in stored and stored["at"] == "2" and stored["hr"] == "1"


@pytest.mark.parametrize("case", ["stale-gen", "queued", "finished", "missing"])
def test_settle_by_an_attempt_that_no_longer_owns_the_task_changes_nothing(fresh_store: TaskStore, view: View,
                                                                           case: str) -> None:
    if case == "stale-gen":  # reclaimed while the attempt ran: the new generation owns it
        dispatch = delivering(fresh_store, NOW)
        task_id, gen = dispatch.task_id, dispatch.gen + 1
    elif case == "queued":
        dispatch = queued(fresh_store, NOW)
        task_id, gen = dispatch.task_id, dispatch.gen
    elif case == "finished":
        dispatch = delivering(fresh_store, NOW)
        fresh_store.settle(dispatch.task_id, dispatch.gen, NOW, Outcome.SUCCEEDED)
        task_id, gen = dispatch.task_id, dispatch.gen
    else:
        task_id, gen = "missing", 1
    before = (view.raw(task_id), view.where(task_id), view.stats(), view.history(task_id))
    assert fresh_store.settle(task_id, gen, NOW + 5, Outcome.FAILED, code=500, error="late",
                              event={"event": "attempt"}) is False
    assert (view.raw(task_id), view.where(task_id), view.stats(), view.history(task_id)) == before


# -- delete ----------------------------------------------------------------------------------------------

def _held(store: TaskStore) -> str:
    return settled(store, NOW, Outcome.HELD)


def _retrying(store: TaskStore) -> str:
    return settled(store, NOW, Outcome.RETRYING, max_retry=2)


def _queued(store: TaskStore) -> str:
    return queued(store, NOW).task_id


@pytest.mark.parametrize("make, previous, gen", [
    (lambda s: parked(s, NOW), State.SCHEDULED, "1"),
    (_queued, State.QUEUED, "2"),
    (_held, State.SCHEDULED, "2"),
    (_retrying, State.RETRYING, "2"),
], ids=["scheduled", "queued", "held", "retrying"])
def test_delete_cancels_a_pending_task(fresh_store: TaskStore, view: View, make: t.Callable[[TaskStore], str],
                                       previous: State, gen: str) -> None:
    task_id = make(fresh_store)
    gen_before = view.raw(task_id).get("gen")
    assert fresh_store.delete(task_id, NOW + 50) == Changed(task_id, previous, "t")
    stored = view.raw(task_id)
    assert stored["st"] == "deleted" and stored["fin"] == str(NOW + 50)
    assert stored["gen"] == gen != gen_before  # a message already in the broker is now stale
    assert view.where(task_id) == {"done"} and view.score("done", task_id) == NOW + 50 + fresh_store.retention_ms
    assert view.stats() == {("deleted", "t"): 1}
    assert view.history(task_id)[-1] == "deleted"
    if previous is State.QUEUED:
        assert fresh_store.claim(task_id, 1, NOW + 60, 6_000) is None


def test_delete_twice_is_not_an_error_and_changes_nothing(fresh_store: TaskStore, view: View) -> None:
    task_id = parked(fresh_store, NOW)
    fresh_store.delete(task_id, NOW)
    before = (view.raw(task_id), view.where(task_id), view.stats(), view.history(task_id))
    assert fresh_store.delete(task_id, NOW + 1) == Changed(task_id, State.DELETED, "t")
    assert (view.raw(task_id), view.where(task_id), view.stats(), view.history(task_id)) == before


@pytest.mark.parametrize("outcome, state, words", [
    (None, "delivering", "being delivered"),
    (Outcome.SUCCEEDED, "succeeded", "already succeeded"),
    (Outcome.FAILED, "failed", "already failed"),
])
def test_delete_refuses_a_started_or_finished_task(fresh_store: TaskStore, view: View, outcome: Outcome | None,
                                                   state: str, words: str) -> None:
    task_id = delivering(fresh_store, NOW).task_id if outcome is None else settled(fresh_store, NOW, outcome)
    before = (view.raw(task_id), view.where(task_id), view.stats())
    with pytest.raises(TaskConflict, match=words) as refused:
        fresh_store.delete(task_id, NOW + 1)
    assert refused.value.state == state
    assert (view.raw(task_id), view.where(task_id), view.stats()) == before


def test_delete_dismisses_a_dead_letter_when_asked(fresh_store: TaskStore, view: View) -> None:
    task_id = settled(fresh_store, NOW, Outcome.FAILED)
    assert view.where(task_id) == {"dead"}
    assert fresh_store.delete(task_id, NOW + 7, dismiss_failed=True) == Changed(task_id, State.FAILED, "t")
    assert view.raw(task_id)["st"] == "deleted" and view.where(task_id) == {"done"}
    assert view.stats() == {("deleted", "t"): 1}


def test_delete_dismiss_still_refuses_a_finished_success(fresh_store: TaskStore) -> None:
    task_id = settled(fresh_store, NOW, Outcome.SUCCEEDED)
    with pytest.raises(TaskConflict):
        fresh_store.delete(task_id, NOW, dismiss_failed=True)


def test_delete_of_a_missing_task_is_not_found(fresh_store: TaskStore, view: View) -> None:
    with pytest.raises(TaskNotFound):
        fresh_store.delete("missing", NOW)
    assert view.raw("missing") == {} and view.stats() == {}


# -- requeue ---------------------------------------------------------------------------------------------

def test_requeue_gives_a_dead_letter_another_attempt(fresh_store: TaskStore, view: View) -> None:
    task_id = settled(fresh_store, NOW, Outcome.FAILED, max_retry=0)
    assert fresh_store.requeue(task_id, NOW + 500) == Changed(task_id, State.FAILED, "t")
    stored = view.raw(task_id)
    assert stored["st"] == "retrying" and "fin" not in stored and stored["lost"] == "0"
    assert stored["due"] == str(NOW + 500) and stored["ex"] == str(NOW) and stored["at"] == "1"
    assert view.where(task_id) == {"timer"} and view.score("timer", task_id) == NOW + 500
    assert view.stats() == {("retrying", "t"): 1}
    assert view.history(task_id)[-1] == "requeued"
    [dispatch] = fresh_store.promote(fresh_store.keys.shard_of(task_id), NOW + 500)
    assert dispatch.task_id == task_id and dispatch.gen == 2


@pytest.mark.parametrize("make, previous, state", [
    (lambda s: parked(s, NOW), State.SCHEDULED, "scheduled"),
    (_held, State.SCHEDULED, "scheduled"),
    (_retrying, State.RETRYING, "retrying"),
], ids=["scheduled", "held", "retrying"])
def test_requeue_moves_a_waiting_task_to_the_front_of_the_timer(fresh_store: TaskStore, view: View,
                                                                make: t.Callable[[TaskStore], str],
                                                                previous: State, state: str) -> None:
    task_id = make(fresh_store)
    first_due = fresh_store.get(task_id).execute_ms
    assert fresh_store.requeue(task_id, NOW + 500).previous is previous
    stored = view.raw(task_id)
    assert stored["st"] == state and stored["due"] == str(NOW + 500) and stored["ex"] == str(first_due)
    assert view.where(task_id) == {"timer"} and view.score("timer", task_id) == NOW + 500
    assert view.stats() == {(state, "t"): 1}


@pytest.mark.parametrize("make, state", [
    (_queued, "queued"),
    (lambda s: delivering(s, NOW).task_id, "delivering"),
    (lambda s: settled(s, NOW, Outcome.SUCCEEDED), "succeeded"),
    (lambda s: (s.delete(i := parked(s, NOW), NOW), i)[1], "deleted"),
], ids=["queued", "delivering", "succeeded", "deleted"])
def test_requeue_refuses_tasks_that_are_not_waiting_or_failed(fresh_store: TaskStore, view: View,
                                                              make: t.Callable[[TaskStore], str], state: str) -> None:
    task_id = make(fresh_store)
    before = (view.raw(task_id), view.where(task_id), view.stats())
    with pytest.raises(TaskConflict) as refused:
        fresh_store.requeue(task_id, NOW + 1)
    assert refused.value.state == state
    assert (view.raw(task_id), view.where(task_id), view.stats()) == before


def test_requeue_of_a_missing_task_is_not_found(fresh_store: TaskStore) -> None:
    with pytest.raises(TaskNotFound):
        fresh_store.requeue("missing", NOW)
