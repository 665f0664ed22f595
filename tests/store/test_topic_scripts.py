"""Topic controls (admit, finish, unhold) and the bulk actions built on the task scripts, on a real Redis.

Timings come from the suite's settings: an attempt lease of 6 s (callback
timeout 2 s + lease 4 s), a concurrency wait of 100 ms, a probe window of 3 s
(callback timeout + 1 s), a breaker threshold of 5 and a cooldown of 1.5 s.
"""
from __future__ import annotations

import dataclasses
import typing as t

import pytest

from httpqueue.context import Context
from httpqueue.exceptions import TaskConflict
from httpqueue.states import AdmitAction, Outcome, State
from httpqueue.store import NewTask, Settlement, TaskRecord
from httpqueue.store.topics import TopicControls, Verdict, host_of
from tests.support.store import NOWHERE, View, delivering, parked, queued, settled

NOW = 1_750_000_000_000
GO = Verdict(AdmitAction.GO)
HOST_A, HOST_B = "http://a.example:8080/hook", "https://b.example/hook"


@pytest.fixture
def context(make_context: t.Callable[..., Context]) -> Context:
    return make_context(shards=1)


@pytest.fixture
def topics(context: Context) -> TopicControls:
    return context.topics


def claimed(context: Context, n: int, topic: str = "t", callback: str = NOWHERE,
            slot_ms: int | None = None) -> list[TaskRecord]:
    """``n`` tasks of ``topic`` claimed at NOW, as the delivery task holds them when it asks for admission."""
    store = context.store
    records = []
    for _ in range(n):
        dispatch = store.create(NewTask(topic, callback, "x", NOW, 0), NOW).dispatch
        assert dispatch is not None
        record = store.claim(dispatch.task_id, dispatch.gen, NOW, context.settings.attempt_lease_ms)
        assert record is not None
        records.append(record if slot_ms is None else dataclasses.replace(record, slot_ms=slot_ms))
    return records


def running(context: Context, topic: str = "t") -> dict[str, int]:
    entries = t.cast(list[tuple[str, float]],
                     context.store.redis.zrange(context.keys.for_topic(topic).running, 0, -1, withscores=True))
    return {str(member): int(score) for member, score in entries}


# -- admit -----------------------------------------------------------------------------------------------

def test_admit_lets_every_task_of_a_plain_topic_go(context: Context, topics: TopicControls) -> None:
    admission = topics.admit("t", claimed(context, 3), NOW)
    assert admission.verdicts == [GO] * 3 and admission.failure_callback is None
    keys = context.keys.for_topic("t")
    assert context.store.redis.exists(keys.running, keys.rate, keys.breaker) == 0  # nothing to keep


def test_admit_holds_every_task_of_a_paused_topic(context: Context, topics: TopicControls) -> None:
    topics.configure("t", {"concurrency": 1, "rate_limit": 1})
    topics.pause("t")
    tasks = claimed(context, 3)
    assert topics.admit("t", tasks, NOW).verdicts == [Verdict(AdmitAction.HELD)] * 3
    assert running(context) == {}  # held tasks take no concurrency place and no rate slot
    assert int(context.store.redis.get(context.keys.for_topic("t").rate) or 0) <= NOW
    assert topics.admit("other", claimed(context, 1, "other"), NOW).verdicts == [GO]
    assert topics.configured() == ["t"] and topics.get("t", NOW)["paused"] is True


def test_admit_keeps_the_concurrency_limit(context: Context, topics: TopicControls) -> None:
    topics.configure("t", {"concurrency": 2})
    tasks = claimed(context, 3)
    wait = Verdict(AdmitAction.WAIT, NOW + context.settings.topic_wait_ms)
    assert topics.admit("t", tasks, NOW).verdicts == [GO, GO, wait]
    lease = context.settings.attempt_lease_ms
    assert running(context) == {tasks[0].id: NOW + lease, tasks[1].id: NOW + lease}
    assert topics.admit("t", tasks[2:], NOW + 1).verdicts == [Verdict(AdmitAction.WAIT, NOW + 1 + 100)]
    topics.finish("t", [(tasks[0].id, host_of(NOWHERE), "ok")], NOW + 2)  # one attempt ends: its place frees
    assert topics.admit("t", tasks[2:], NOW + 2).verdicts == [GO]
    assert set(running(context)) == {tasks[1].id, tasks[2].id}
    assert topics.get("t", NOW + 2)["running"] == 2


def test_admit_frees_the_places_of_attempts_whose_lease_ran_out(context: Context, topics: TopicControls) -> None:
    topics.configure("t", {"concurrency": 1})
    first, second = claimed(context, 2)
    assert topics.admit("t", [first], NOW).verdicts == [GO]  # then its worker dies: no finish
    lease = context.settings.attempt_lease_ms
    assert topics.admit("t", [second], NOW + lease - 1).verdicts[0].action is AdmitAction.WAIT
    assert topics.admit("t", [second], NOW + lease).verdicts == [GO]
    assert set(running(context)) == {second.id}


def test_admit_spaces_starts_by_the_rate_and_honours_reserved_slots(context: Context,
                                                                    topics: TopicControls) -> None:
    topics.configure("t", {"rate_limit": 10})  # one start per 100 ms
    tasks = claimed(context, 3)
    assert topics.admit("t", tasks, NOW).verdicts == [
        GO, Verdict(AdmitAction.SLOT, NOW + 100), Verdict(AdmitAction.SLOT, NOW + 200)]
    rate_key = context.keys.for_topic("t").rate
    assert int(context.store.redis.get(rate_key) or 0) == NOW + 300
    assert context.store.redis.pttl(rate_key) > 0
    # the second task comes back at its slot carrying it: it passes without taking another slot
    [back] = claimed(context, 1, slot_ms=NOW + 100)
    assert topics.admit("t", [back], NOW + 100).verdicts == [GO]
    assert int(context.store.redis.get(rate_key) or 0) == NOW + 300
    # a task without a slot queues behind the reserved ones
    [fresh] = claimed(context, 1)
    assert topics.admit("t", [fresh], NOW + 100).verdicts == [Verdict(AdmitAction.SLOT, NOW + 300)]


def test_admit_returns_the_topic_failure_callback(context: Context, topics: TopicControls) -> None:
    topics.configure("t", {"failure_callback": "http://127.0.0.1:9/failed"})
    assert topics.admit("t", claimed(context, 1), NOW).failure_callback == "http://127.0.0.1:9/failed"
    topics.configure("t", {"failure_callback": None})
    assert topics.admit("t", claimed(context, 1), NOW).failure_callback is None


# -- finish and the circuit breaker ----------------------------------------------------------------------

def fail(topics: TopicControls, host_url: str, n: int, now: int) -> list[t.Any]:
    return list(topics.finish("t", [(f"f{i}", host_of(host_url), "fail") for i in range(n)], now))


def test_failures_in_a_row_open_the_circuit_of_that_host_only(context: Context, topics: TopicControls) -> None:
    cooldown, threshold = context.settings.breaker_cooldown_ms, context.settings.breaker_threshold
    assert fail(topics, HOST_A, threshold - 1, NOW) == []
    assert fail(topics, HOST_A, 1, NOW) == [host_of(HOST_A), NOW + cooldown]
    tasks = claimed(context, 1, callback=HOST_A) + claimed(context, 1, callback=HOST_B)
    assert topics.admit("t", tasks, NOW + 1).verdicts == [Verdict(AdmitAction.OPEN, NOW + cooldown), GO]
    [circuit] = topics.get("t", NOW + 1)["circuits"]
    assert circuit["host"] == "a.example:8080" and circuit["state"] == "open" and circuit["failures"] == threshold


def test_a_success_resets_the_count_of_failures_in_a_row(context: Context, topics: TopicControls) -> None:
    threshold = context.settings.breaker_threshold
    fail(topics, HOST_A, threshold - 1, NOW)
    topics.finish("t", [("ok", host_of(HOST_A), "ok")], NOW)
    assert fail(topics, HOST_A, threshold - 1, NOW) == []
    assert topics.get("t", NOW)["circuits"][0]["state"] == "closed"


def test_a_half_open_circuit_lets_one_probe_through_and_its_success_closes_it(context: Context,
                                                                               topics: TopicControls) -> None:
    cooldown, wait = context.settings.breaker_cooldown_ms, context.settings.topic_wait_ms
    fail(topics, HOST_A, context.settings.breaker_threshold, NOW)
    half_open = NOW + cooldown
    probe, other = claimed(context, 2, callback=HOST_A)
    assert topics.admit("t", [probe, other], half_open).verdicts == [GO, Verdict(AdmitAction.OPEN, half_open + 5 * wait)]
    assert topics.get("t", half_open)["circuits"][0]["state"] == "half-open"
    topics.finish("t", [(probe.id, host_of(HOST_A), "ok")], half_open + 10)
    assert context.store.redis.hgetall(context.keys.for_topic("t").breaker) == {}
    assert topics.admit("t", [other], half_open + 10).verdicts == [GO]


def test_a_failed_probe_reopens_the_circuit_for_twice_as_long_up_to_the_maximum(
        make_context: t.Callable[..., Context]) -> None:
    context = make_context(shards=1, breaker_cooldown_max=4.0)
    topics, cooldown = context.topics, context.settings.breaker_cooldown_ms
    fail(topics, HOST_A, context.settings.breaker_threshold, NOW)
    clock = NOW
    for opening in (2, 3, 4):
        clock += 10 * cooldown  # long after it half-opened
        [probe] = claimed(context, 1, callback=HOST_A)
        assert topics.admit("t", [probe], clock).verdicts == [GO]
        assert fail(topics, HOST_A, 1, clock) == [host_of(HOST_A), clock + min(cooldown * 2 ** (opening - 1), 4_000)]
    assert topics.get("t", clock)["circuits"][0]["openings"] == 4


def test_code_101_answers_are_neutral_and_no_threshold_means_no_breaker(
        make_context: t.Callable[..., Context]) -> None:
    context = make_context(shards=1)
    topics = context.topics
    topics.finish("t", [(f"s{i}", host_of(HOST_A), "skip") for i in range(20)], NOW)
    assert context.store.redis.hgetall(context.keys.for_topic("t").breaker) == {}
    off = make_context(shards=1, breaker_threshold=0)
    assert list(off.topics.finish("t", [(f"f{i}", host_of(HOST_A), "fail") for i in range(50)], NOW)) == []
    assert off.store.redis.hgetall(off.keys.for_topic("t").breaker) == {}


def test_finish_releases_running_places_whatever_the_result(context: Context, topics: TopicControls) -> None:
    topics.configure("t", {"concurrency": 5})
    tasks = claimed(context, 3)
    topics.admit("t", tasks, NOW)
    topics.finish("t", [(tasks[0].id, "h:1", "ok"), (tasks[1].id, "h:1", "fail"), (tasks[2].id, "h:1", "skip")], NOW)
    assert running(context) == {}


# -- unhold (resume) -------------------------------------------------------------------------------------

def hold(context: Context, topics_and_dues: t.Sequence[tuple[str, int]]) -> list[str]:
    """Tasks parked in ``held`` as the delivery task leaves them for a paused topic (claim, settle held)."""
    store = context.store
    created = store.create_many([NewTask(topic, NOWHERE, "x", due, 0) for topic, due in topics_and_dues], NOW)
    dispatches = [c.dispatch for c in created if not isinstance(c, Exception)]
    assert all(d is not None for d in dispatches) and len(dispatches) == len(topics_and_dues)
    items = [(d.task_id, d.gen) for d in dispatches if d is not None]
    assert len(store.claim_many(items, NOW, 6_000)) == len(items)
    assert all(store.settle_many([Settlement(i, g, NOW, Outcome.HELD) for i, g in items]))
    return [i for i, _ in items]


def test_resume_moves_the_topic_held_tasks_back_to_the_timer_at_their_due_time(context: Context,
                                                                              topics: TopicControls) -> None:
    topics.pause("a")
    ids = hold(context, [("a", NOW - 30), ("b", NOW - 20), ("a", NOW - 10)])
    context.store.redis.zadd(context.keys.held(0), {"vanished": NOW - 25})
    view = View(context.store)
    assert topics.resume("a") == 2
    assert view.members("timer", 0) == [ids[0], ids[2]]
    assert view.score("timer", ids[0]) == NOW - 30 and view.score("timer", ids[2]) == NOW - 10
    assert view.members("held", 0) == [ids[1]]  # the other topic's task stays; the leftover is gone
    assert context.store.redis.hget(context.keys.for_topic("a").config, "paused") == "0"
    assert view.stats() == {("scheduled", "a"): 2, ("scheduled", "b"): 1}
    assert topics.resume("a") == 0


def test_resume_walks_a_held_set_larger_than_one_chunk(context: Context, topics: TopicControls) -> None:
    layout = [("a" if i % 3 else "b", NOW - 10_000 + i) for i in range(1_300)]  # 866 of a, 434 of b, mixed
    ids = hold(context, layout)
    view = View(context.store)
    assert topics.resume("a") == sum(topic == "a" for topic, _ in layout)
    assert view.members("held", 0) == [i for i, (topic, _) in zip(ids, layout) if topic == "b"]
    assert view.members("timer", 0) == [i for i, (topic, _) in zip(ids, layout) if topic == "a"]


# -- bulk actions: listing + delete / requeue ------------------------------------------------------------

def test_topic_purge_deletes_every_pending_task_of_the_topic_only(context: Context, topics: TopicControls) -> None:
    store = context.store
    pending = [parked(store, NOW, "p"), queued(store, NOW, "p").task_id, settled(store, NOW, Outcome.HELD, "p"),
               settled(store, NOW, Outcome.RETRYING, "p", max_retry=1)]
    busy = delivering(store, NOW, "p").task_id
    other = parked(store, NOW, "q")
    assert topics.purge("p", NOW + 1) == 4
    assert {store.get(i).state for i in pending} == {State.DELETED}
    assert store.get(busy).state is State.DELIVERING and store.get(other).state is State.SCHEDULED


def test_dead_letters_are_replayed_or_dismissed(context: Context, topics: TopicControls) -> None:
    store = context.store
    dead = [settled(store, NOW, Outcome.FAILED, "d") for _ in range(4)]
    other = settled(store, NOW, Outcome.FAILED, "e")
    with pytest.raises(TaskConflict, match="not a dead letter"):
        topics.replay_dead("d", NOW, [other])
    assert topics.replay_dead("d", NOW + 1, [dead[0]]) == 1
    assert topics.dismiss_dead("d", NOW + 1, [dead[1]]) == 1
    assert topics.replay_dead("d", NOW + 2) == 2
    states = [store.get(i).state for i in dead]
    assert states == [State.RETRYING, State.DELETED, State.RETRYING, State.RETRYING]
    assert topics.dismiss_dead("d", NOW + 3) == 0 and store.get(other).state is State.FAILED
    assert View(store).members("timer", 0) == [dead[0], *sorted(dead[2:])]  # due now, in the order replayed


def test_a_probe_turned_away_by_the_concurrency_limit_does_not_block_the_next_probe(
        context: Context, topics: TopicControls) -> None:
    topics.configure("t", {"concurrency": 1})
    busy = claimed(context, 1)  # an attempt to another host holds the one place
    assert topics.admit("t", busy, NOW).verdicts == [GO]
    fail(topics, HOST_A, context.settings.breaker_threshold, NOW)
    half_open = NOW + context.settings.breaker_cooldown_ms
    [probe] = claimed(context, 1, callback=HOST_A)
    assert topics.admit("t", [probe], half_open).verdicts[0].action is AdmitAction.WAIT  # no attempt made
    topics.finish("t", [(busy[0].id, "other:80", "ok")], half_open + 1)
    # the place is free again and no probe is under way: this one should be the probe
    assert topics.admit("t", [probe], half_open + context.settings.topic_wait_ms).verdicts == [GO]
