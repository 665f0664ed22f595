"""The durable timer: long delays without waiting, racing promoters, Redis restarts.

The promoter's clock and horizon are injectable, so a task due in 30 days is
tested by running a promoter whose clock says it is 30 days later; the real
worker then delivers it at once (messages carry a countdown relative to the
promoter's clock).
"""
from __future__ import annotations

import threading
import time
import typing as t

import pytest

from httpqueue.config import Settings
from httpqueue.context import Context
from httpqueue.embedded import EmbeddedRedis, free_port
from httpqueue.states import Outcome
from httpqueue.store import Dispatch, NewTask
from httpqueue.store.keys import TIMER_HOUR_MS
from httpqueue.worker.promoter import Promoter
from tests.support.api import NOWHERE, SEED, submit
from tests.support.receiver import Receiver
from tests.support.store import prefix_keys

DAY = 86_400


def test_a_task_thirty_days_out_fires_once_at_its_time(client: t.Any, app: t.Any, receiver: Receiver,
                                                       topic: str, worker: t.Any) -> None:
    from httpqueue.celery import app as celery_app
    from httpqueue.publish import Publisher

    publish = Publisher(celery_app)

    created = submit(client, topic, receiver.url("/month"), url=SEED, delay=30 * DAY, retry=0)
    store = app.extensions["httpqueue"].store
    due = store.get(created["id"]).due_ms / 1000
    promoted: list[Dispatch] = []

    def recording_publish(batch: t.Sequence[Dispatch], clock_ms: int) -> int:
        promoted.extend(batch)
        return publish(batch, clock_ms)

    early = Promoter(store, recording_publish, clock=lambda: due - 61)
    early.run_pass()
    assert created["id"] not in [d.task_id for d in promoted]        # not yet: outside the horizon
    assert store.get(created["id"]).state.value == "scheduled"
    late = Promoter(store, recording_publish, clock=lambda: due + 0.001)
    late.run_pass()
    late.run_pass()
    assert [d.task_id for d in promoted].count(created["id"]) == 1
    [request] = receiver.wait_task(created["id"])
    assert request.headers["X-Httpqueue-Attempt"] == "1"


def test_two_promoters_racing_hand_out_each_task_once(make_context: t.Callable[..., Context]) -> None:
    context = make_context(shards=4, promote_batch=50, timer_horizon=1, lease=30,  # no lease runs out here
                           visibility_timeout=3600)
    store = context.store
    now = int(time.time() * 1000)
    ids = [c.task_id for c in store.create_many(
        [NewTask("race", NOWHERE, i, now + 5_000 + i, 0) for i in range(2000)], now)]
    handed: list[str] = []
    lock = threading.Lock()

    def collect(batch: t.Sequence[Dispatch], clock_ms: int) -> int:
        with lock:
            handed.extend(d.task_id for d in batch)
        return len(batch)

    clock = lambda: now / 1000 + 10  # noqa: E731 - everything is due
    promoters = [Promoter(Context(context.settings).store, collect, clock=clock) for _ in range(4)]
    threads = [threading.Thread(target=lambda p=p: [p.run_pass() for _ in range(15)]) for p in promoters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(handed) == sorted(ids)
    assert store.counts() == {("queued", "race"): 2000}


def test_lease_expiry_reissues_with_a_new_generation(make_context: t.Callable[..., Context]) -> None:
    """A promoter that died after taking tasks (nothing published) loses nothing."""
    store = make_context(shards=2, lease=5, timer_horizon=60, visibility_timeout=3600).store
    now = int(time.time() * 1000)
    task_id = store.create(NewTask("lease", NOWHERE, "x", now + 120_000, 0), now).task_id
    shard = store.keys.shard_of(task_id)
    [taken] = store.promote(shard, now + 100_000)           # then the promoter "dies"
    assert store.reclaim(shard, now + 120_000 + 4_000) == []  # lease (5 s after due) still runs
    [again] = store.reclaim(shard, now + 120_000 + 5_001)
    assert again.task_id == task_id and again.gen == taken.gen + 1
    assert store.claim(task_id, taken.gen, now + 125_100, 10_000) is None  # the old message is stale
    assert store.claim(task_id, again.gen, now + 125_100, 10_000) is not None


def test_a_queued_task_nobody_takes_is_reissued_with_backoff_and_never_failed(
        make_context: t.Callable[..., Context]) -> None:
    """A message waiting behind a backlog or a reconnecting consumer is not a lost attempt.

    Each re-issue of a still-queued task waits twice as long as the one before
    (at most 32 leases); the task stays queued however often that happens, and
    the first message that comes through delivers it. Only attempts lost while
    delivering count towards the limit after which a task fails.
    """
    store = make_context(shards=1, lease=1).store
    now = int(time.time() * 1000)
    created = store.create(NewTask("backlog", NOWHERE, "x", now, 0), now)
    task_id, issued = created.task_id, created.dispatch  # due now: queued at once, with a lease
    inflight = store.keys.for_task(task_id).inflight
    clock, waits = int(store.redis.zscore(inflight, task_id)), []
    for _ in range(8):  # far beyond the 3 lost attempts after which a delivering task fails
        assert store.reclaim(0, clock - 1) == []            # not before its lease runs out
        [issued] = store.reclaim(0, clock)
        score = store.redis.zscore(inflight, task_id)
        waits.append(int(score) - clock)
        clock = int(score)
    assert waits == [2_000, 4_000, 8_000, 16_000, 32_000, 32_000, 32_000, 32_000]
    assert store.get(task_id).state.value == "queued"
    claimed = store.claim(task_id, issued.gen, clock, 10_000)
    assert claimed is not None and claimed.attempts == 1
    # an attempt lost by a dying worker still counts, and the backoff starts over
    [issued] = store.reclaim(0, clock + 11_000)
    assert store.redis.zscore(inflight, task_id) == clock + 11_000 + 1_000
    assert store.redis.hget(store.keys.for_task(task_id).task, "lost") == "1"


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_parked_tasks_survive_a_redis_restart(tmp_path: t.Any, kill: bool) -> None:
    server = EmbeddedRedis(tmp_path / "r", port=free_port()).start()
    try:
        settings = Settings.load({"redis_url": server.url, "shards": 2}, environ={})
        store = Context(settings).store
        now = int(time.time() * 1000)
        ids = [c.task_id for c in store.create_many(
            [NewTask("persist", NOWHERE, i, now + DAY * 1000, 0) for i in range(500)], now)]
        server.stop(kill=kill)
        server.start()
        fresh = Context(settings).store
        assert fresh.counts() == {("scheduled", "persist"): 500}
        handed = [d.task_id for shard in range(2) for d in fresh.promote(shard, now + DAY * 1000)]
        assert sorted(handed) == sorted(ids)
    finally:
        server.stop()


def test_deleted_and_finished_tasks_leave_nothing_after_retention(make_context: t.Callable[..., Context]) -> None:
    store = make_context(shards=2, retention=60).store
    now = int(time.time() * 1000)
    parked = store.create(NewTask("gone", NOWHERE, "x", now + DAY * 1000, 0), now).task_id
    queued = store.create(NewTask("gone", NOWHERE, "x", now + 10, 0), now)
    assert queued.dispatch is not None
    store.delete(parked, now)
    assert store.claim(queued.task_id, queued.dispatch.gen, now + 10, 10_000) is not None
    store.settle(queued.task_id, queued.dispatch.gen, now + 20, Outcome.SUCCEEDED, code=100,
                 event={"event": "attempt"})
    assert sum(store.purge(s, now + 59_000) for s in range(2)) == 0
    assert sum(store.purge(s, now + 61_000) for s in range(2)) == 2
    stats = {store.keys.stats(shard) for shard in range(store.keys.shards)}
    shard = store.keys.shard_of(parked)
    hour = store.keys.hour_list(shard, (now + DAY * 1000) // TIMER_HOUR_MS)
    # the deleted far task's id stays in its hour list (no delete searches a list) until that hour is moved
    assert [k for k in prefix_keys(store.redis, store.keys) if k not in stats] == sorted(
        [store.keys.hours(shard), hour])
    assert store.promote(shard, now + DAY * 1000) == []
    assert [k for k in prefix_keys(store.redis, store.keys) if k not in stats] == []
    assert store.counts() == {}
