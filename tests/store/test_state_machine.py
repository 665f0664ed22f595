"""A state machine drives the task store in random order and checks its bookkeeping after every step.

Hypothesis interleaves create (and re-create of a taken or purged id),
promote, claim, settle (any outcome, by the current or a stale generation),
whole attempts, attempts lost by dying workers (up to failing the task),
delete, requeue, reclaim, purge and resume, with the clock moving forward in
between, on the suite's real Redis and Redis Cluster (a fresh key prefix and two shards per
example; 30 examples of up to 30 steps, a few seconds). After every step:

* the per-state counts (``TaskStore.counts()`` and every shard's statistics
  hash) equal the tasks' real states, counted from their ``st`` fields;
* every task is in exactly the sets its state implies (timer or held while
  scheduled or retrying, or the list of its due hour while new and far, in-flight
  while queued or delivering, done when succeeded or deleted, dead letters when
  failed), and the sets hold nothing else (hour lists may: stale entries);
* each shard's hours set names exactly the hour lists that exist;
* a task's generation never goes down.
"""
from __future__ import annotations

import collections
import typing as t

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, \
    run_state_machine_as_test

from httpqueue.embedded import EmbeddedRedis
from httpqueue.exceptions import TaskConflict, TaskNotFound
from httpqueue.states import Outcome, State
from httpqueue.store import NewTask, Settlement
from httpqueue.store.tasks import MAX_LOST
from tests.support.store import NOWHERE, STATE_SETS, TASK_SETS, FreshContexts, memberships, stats

NOW = 1_750_000_000_000
SHARDS = 2
TOPICS = ("a", "b")
FAR = 3 * 3_600_000
"""A delay whose due hour starts beyond the promoter's reach (an hour): such a task waits in an hour list."""
ELAPSE = st.sampled_from([0, 1, 250, 2_000, 4_001, 10_000, 40_000, 7_200_000])
"""Milliseconds the clock moves before a promote, reclaim or purge pass: within the horizon (2 s), past a lease
(4 s), past the retention (30 s), far enough to bring an hour list within the promoter's reach (2 h)."""
OUTCOMES = st.sampled_from([*Outcome, Outcome.HELD, Outcome.HELD])
"""Every outcome, and ``held`` more often: held tasks are the rarest state otherwise."""

MACHINE_SETTINGS = settings(max_examples=30, stateful_step_count=30, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class TaskLifecycle(RuleBasedStateMachine):
    """One example: a fresh store, a clock, and the ids created so far."""

    redis_url: t.ClassVar[str] = ""
    broker_url: t.ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.contexts = FreshContexts(self.redis_url, self.broker_url)
        # short retention, so purges happen within an example's clock
        self.context = self.contexts(shards=SHARDS, retention=30, dead_letter_retention=60, promote_batch=50)
        self.store = self.context.store
        self.topics = self.context.topics
        self.keys = self.context.keys
        self.client = self.store.redis
        self.now = NOW
        self.ids: list[str] = []
        self.gens: dict[str, int] = {}
        self.agains = 0  # creates of an id already used, so far

    def teardown(self) -> None:
        self.contexts.close()

    # -- reading what is stored

    def gen_of(self, task_id: str) -> int:
        return int(self.client.hget(self.keys.task(task_id), "gen") or 0)

    def states(self) -> dict[str, tuple[str, str]]:
        """(state, topic) of every task that still exists, read from the hashes."""
        pipe = self.client.pipeline(transaction=False)
        for task_id in self.ids:
            pipe.hmget(self.keys.task(task_id), "st", "tp")
        return {i: (st_, tp) for i, (st_, tp) in zip(self.ids, pipe.execute()) if st_ is not None}

    # -- rules

    @initialize(delays=st.lists(st.sampled_from([0, 0, 300, 5_000, 60_000]), min_size=2, max_size=6))
    def some_tasks(self, delays: list[int]) -> None:
        """A few tasks to start with, most of them queued (due at once), of both topics."""
        for i, delay in enumerate(delays):
            self.create(TOPICS[i % 2], delay, i % 3)

    @rule(topic=st.sampled_from(TOPICS), delay=st.sampled_from([-1_000, 0, 300, 5_000, 60_000, FAR]),
          retries=st.integers(0, 2))
    def create(self, topic: str, delay: int, retries: int) -> None:
        # ids of the test's own (the prefix is fresh), so shards and orders replay exactly when shrinking
        task_id = f"task-{len(self.ids)}"
        created = self.store.create(NewTask(topic, NOWHERE, "x", self.now + delay, retries, task_id=task_id),
                                    self.now)
        assert created.task_id == task_id and not created.replayed
        self.ids.append(task_id)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), delay=st.sampled_from([0, 60_000, FAR]))
    def create_again(self, data: st.DataObject, delay: int) -> None:
        """An id still stored is a conflict that changes nothing; a purged one may be used again.

        Each create carries content of its own: the same create sent twice at the same moment is taken
        for one call whose reply was lost and sent again (``TaskStore._ran_before``), not a conflict.
        """
        task_id = data.draw(st.sampled_from(self.ids))
        exists = self.client.exists(self.keys.task(task_id))
        self.agains += 1
        again = NewTask("a", NOWHERE, f"y{self.agains}", self.now + delay, 0, task_id=task_id)
        if exists:
            with pytest.raises(TaskConflict):
                self.store.create(again, self.now)
        else:
            assert self.store.create(again, self.now).task_id == task_id
            self.gens.pop(task_id, None)  # a new task: its generations start over

    @rule(shard=st.integers(0, SHARDS - 1), ms=ELAPSE)
    def promote(self, shard: int, ms: int) -> None:
        """A promoter pass over one shard, ``ms`` after the last step."""
        self.now += ms
        for dispatch in self.store.promote(shard, self.now):
            assert self.keys.shard_of(dispatch.task_id) == shard
            assert self.client.hget(self.keys.task(dispatch.task_id), "st") == State.QUEUED

    @rule(shard=st.integers(0, SHARDS - 1), ms=ELAPSE)
    def reclaim(self, shard: int, ms: int) -> None:
        self.now += ms
        for dispatch in self.store.reclaim(shard, self.now):
            assert self.client.hget(self.keys.task(dispatch.task_id), "st") == State.QUEUED

    @rule(shard=st.integers(0, SHARDS - 1), ms=ELAPSE)
    def purge(self, shard: int, ms: int) -> None:
        self.now += ms
        self.store.purge(shard, self.now)

    def pick(self, data: st.DataObject, states: t.Collection[State], likely: bool) -> str | None:
        """An id to act on: with ``likely``, one in ``states`` if there is one; else any id created."""
        ids = [i for i, (st_, _) in self.states().items() if st_ in states] if likely else []
        return data.draw(st.sampled_from(ids or self.ids)) if ids or self.ids else None

    @rule(data=st.data(), likely=st.booleans(), skew=st.sampled_from([0, 0, 0, -1, 1]),
          owner=st.sampled_from(["", "w1", "w2"]))
    def claim(self, data: st.DataObject, likely: bool, skew: int, owner: str) -> None:
        """A delivery message arrives: of the current generation (skew 0), or a stale or unknown one."""
        task_id = self.pick(data, {State.QUEUED}, likely)
        if task_id is None:
            return
        state = self.client.hget(self.keys.task(task_id), "st")
        claimed = self.store.claim_many([(task_id, self.gen_of(task_id) + skew)], self.now, 6_000, owner=owner)
        assert bool(claimed) == (state == State.QUEUED and skew == 0)

    @rule(owner=st.sampled_from(["w1", "w2"]))
    def worker_dies(self, owner: str) -> None:
        """A worker's heartbeat stops: its attempts still delivering become due for reclaim, nothing else moves."""
        inflight = {s: dict(self.client.zrange(self.keys.inflight(s), 0, -1, withscores=True)) for s in range(SHARDS)}
        released = self.store.release_orphans(owner, self.now)
        after = {s: self.client.zrange(self.keys.inflight(s), 0, -1, withscores=True) for s in range(SHARDS)}
        changed = {task_id for s, entries in after.items() for task_id, score in entries
                   if inflight[s].get(task_id) != score}
        assert len(changed) <= released
        for task_id in changed:
            assert self.client.hmget(self.keys.task(task_id), "st", "ow") == [State.DELIVERING, owner]

    @rule(data=st.data(), likely=st.booleans(), outcome=OUTCOMES,
          skew=st.sampled_from([0, 0, 0, -1]), wait=st.sampled_from([0, 1_000, 30_000]), slot=st.booleans())
    def settle(self, data: st.DataObject, likely: bool, outcome: Outcome, skew: int, wait: int, slot: bool) -> None:
        """An attempt's outcome is recorded, by the attempt that owns the task (skew 0) or by a stale one."""
        task_id = self.pick(data, {State.DELIVERING}, likely)
        if task_id is None:
            return
        state = self.client.hget(self.keys.task(task_id), "st")
        due = self.now + wait
        [recorded] = self.store.settle_many([Settlement(
            task_id, self.gen_of(task_id) + skew, self.now, outcome, due, 500, "boom", {"event": "attempt"},
            due if slot and outcome is Outcome.DEFERRED else None)])
        assert recorded == (state == State.DELIVERING and skew == 0)

    @rule(data=st.data(), outcome=OUTCOMES, wait=st.sampled_from([0, 1_000, 30_000]))
    def attempt(self, data: st.DataObject, outcome: Outcome, wait: int) -> None:
        """The common path in one step: a queued task's current message is claimed, and its attempt settled."""
        task_id = self.pick(data, {State.QUEUED}, likely=True)
        if task_id is None or self.client.hget(self.keys.task(task_id), "st") != State.QUEUED:
            return
        gen = self.gen_of(task_id)
        assert self.store.claim(task_id, gen, self.now, 6_000) is not None
        assert self.store.settle(task_id, gen, self.now, outcome, due_ms=self.now + wait, code=500, error="boom")

    @rule(data=st.data(), times=st.sampled_from([1, MAX_LOST + 1]))
    def lose(self, data: st.DataObject, times: int) -> None:
        """Workers die while delivering a task, ``times`` in a row: each time its lease runs out and it is reclaimed."""
        task_id = self.pick(data, {State.QUEUED}, likely=True)
        if task_id is None:
            return
        shard = self.keys.shard_of(task_id)
        for _ in range(times):
            if self.client.hget(self.keys.task(task_id), "st") != State.QUEUED:
                return
            assert self.store.claim(task_id, self.gen_of(task_id), self.now, 6_000) is not None
            self.now += 6_000
            self.store.reclaim(shard, self.now)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), likely=st.booleans(), dismiss=st.booleans())
    def delete(self, data: st.DataObject, likely: bool, dismiss: bool) -> None:
        task_id = self.pick(data, {State.SCHEDULED, State.QUEUED, State.RETRYING, State.FAILED}, likely)
        assert task_id is not None
        state = self.client.hget(self.keys.task(task_id), "st")
        try:
            changed = self.store.delete(task_id, self.now, dismiss_failed=dismiss)
        except TaskConflict as refused:
            assert state in (State.DELIVERING, State.SUCCEEDED) or (state == State.FAILED and not dismiss)
            assert refused.state == state
        except TaskNotFound:
            assert state is None
        else:
            assert changed.previous == state
            assert self.client.hget(self.keys.task(task_id), "st") == State.DELETED

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), likely=st.booleans())
    def requeue(self, data: st.DataObject, likely: bool) -> None:
        task_id = self.pick(data, {State.FAILED, State.SCHEDULED, State.RETRYING}, likely)
        assert task_id is not None
        state = self.client.hget(self.keys.task(task_id), "st")
        try:
            self.store.requeue(task_id, self.now)
        except TaskConflict:
            assert state not in (State.FAILED, State.SCHEDULED, State.RETRYING)
        except TaskNotFound:
            assert state is None
        else:
            assert state in (State.FAILED, State.SCHEDULED, State.RETRYING)

    @rule(topic=st.sampled_from(TOPICS))
    def resume(self, topic: str) -> None:
        """Held tasks (settled ``held``) go back to the timer."""
        held_before = sum(self.client.zcard(self.keys.held(s)) for s in range(SHARDS))
        moved = self.topics.resume(topic)
        assert sum(self.client.zcard(self.keys.held(s)) for s in range(SHARDS)) == held_before - moved

    # -- invariants

    @invariant()
    def counts_equal_the_real_states(self) -> None:
        real = collections.Counter(self.states().values())
        assert self.store.counts() == dict(real)
        assert stats(self.client, self.keys) == dict(real)
        for shard in range(SHARDS):  # per shard too: a +1 in one and a -1 in another must not cancel out
            in_shard = collections.Counter(v for i, v in self.states().items() if self.keys.shard_of(i) == shard)
            stored = {tuple(str(f).split("|", 1)): int(n)
                      for f, n in self.client.hgetall(self.keys.stats(shard)).items()}
            assert {k: n for k, n in stored.items() if n} == dict(in_shard), shard
            assert all(n >= 0 for n in stored.values()), stored

    @invariant()
    def every_task_is_in_the_sets_its_state_implies(self) -> None:
        states = self.states()
        found = memberships(self.client, self.keys, list(states))
        for task_id, (state, _) in states.items():
            assert found[task_id] in STATE_SETS[State(state)], (task_id, state, sorted(found[task_id]))
        for shard in range(SHARDS):
            for name in TASK_SETS:
                members = set(self.client.zrange(getattr(self.keys, name)(shard), 0, -1))
                assert members <= set(states), (name, shard, members - set(states))  # no leftovers

    @invariant()
    def the_hours_set_names_exactly_the_hour_lists(self) -> None:
        for shard in range(SHARDS):
            hours = {int(h) for h in self.client.zrange(self.keys.hours(shard), 0, -1)}
            lists = {int(str(k).rpartition(":")[2])
                     for k in self.client.scan_iter(match=f"{self.keys.hour_list_prefix(shard)}*", count=1000)}
            assert hours == lists, shard

    @invariant()
    def generations_never_go_down(self) -> None:
        for task_id in self.states():
            gen = self.gen_of(task_id)
            assert gen >= self.gens.get(task_id, 0), task_id
            self.gens[task_id] = gen


def test_counts_and_sets_follow_the_task_states(store_url: str, redis_server: EmbeddedRedis) -> None:
    TaskLifecycle.redis_url, TaskLifecycle.broker_url = store_url, redis_server.url
    run_state_machine_as_test(TaskLifecycle, settings=MACHINE_SETTINGS)
