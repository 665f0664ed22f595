"""The task store on the suite's Redis, with a key prefix of each test's own, and what to check in it.

Store tests run against the session's real Redis (the ``redis_server`` fixture),
which the session's worker and the Flask app also use under the prefix ``hq``,
or against the session's Redis Cluster (``redis_cluster``): the helpers read
through the store's own kind of client, so they work on both.
So a fresh store is never a ``FLUSHDB``: each one gets a prefix nobody else
uses (checked empty when made) and its keys are deleted when the test ends.
"""
from __future__ import annotations

import json
import typing as t
import uuid

from httpqueue.config import Settings
from httpqueue.connections import StoreClient, redis_client
from httpqueue.context import Context
from httpqueue.states import Outcome, State
from httpqueue.store.keys import TIMER_HOUR_MS, Keys
from httpqueue.store.records import Dispatch, NewTask
from httpqueue.store.tasks import TaskStore
from tests.support.settings import TEST_SETTINGS

#: The sorted sets of a shard that hold task ids (the names of the :class:`Keys` methods).
TASK_SETS = ("timer", "held", "inflight", "done", "dead")

HOURS = "hours"
"""What :func:`memberships` calls a task's place in the list of its due hour (``Keys.hour_list``), where it waits."""

#: For each state, the sets its task may be in: exactly one of the alternatives, and no other set.
STATE_SETS: dict[State, tuple[frozenset[str], ...]] = {
    State.SCHEDULED: (frozenset({"timer"}), frozenset({"held"}), frozenset({HOURS})),
    State.RETRYING: (frozenset({"timer"}), frozenset({"held"})),
    State.QUEUED: (frozenset({"inflight"}),),
    State.DELIVERING: (frozenset({"inflight"}),),
    State.SUCCEEDED: (frozenset({"done"}),),
    State.DELETED: (frozenset({"done"}),),
    State.FAILED: (frozenset({"dead"}),),
}


def fresh_prefix() -> str:
    """A key prefix no other test uses."""
    return f"ts-{uuid.uuid4().hex[:12]}"


def prefix_keys(client: StoreClient, keys: Keys) -> list[str]:
    """Every Redis key under ``keys.prefix`` (a store's whole footprint)."""
    return sorted(str(k) for k in client.scan_iter(match=f"{keys.prefix}:*", count=1000))


def drop_prefix(client: StoreClient, keys: Keys) -> int:
    """Delete every key under ``keys.prefix``; returns how many."""
    found = prefix_keys(client, keys)
    for start in range(0, len(found), 500):
        client.delete(*found[start:start + 500])
    return len(found)


class FreshContexts:
    """Makes :class:`Context` objects on one Redis, each with a fresh key prefix; :meth:`close` deletes their keys.

    Settings are the suite's (:data:`TEST_SETTINGS`) with the caller's overrides
    (``shards=1``, ``lease=5``, ...), so lease, horizon and retention are the
    values the store derives from settings, as in production.
    """

    def __init__(self, redis_url: str, broker_url: str = "") -> None:
        self.redis_url = redis_url
        self.broker_url = broker_url  # a Redis Cluster store needs a broker of its own (never used by store tests)
        self.client = redis_client(redis_url)
        self.made: list[Context] = []

    def __call__(self, **overrides: t.Any) -> Context:
        settings = Settings.load({**TEST_SETTINGS, "redis_url": self.redis_url, "key_prefix": fresh_prefix(),
                                  "broker_url": self.broker_url, **overrides}, environ={})
        context = Context(settings)
        assert prefix_keys(self.client, context.keys) == [], f"prefix {context.keys.prefix} is not fresh"
        self.made.append(context)
        return context

    def close(self) -> None:
        for context in self.made:
            drop_prefix(self.client, context.keys)
            if "store" in context.__dict__:
                context.store.redis.close()
        self.client.close()


def memberships(client: StoreClient, keys: Keys, task_ids: t.Sequence[str]) -> dict[str, frozenset[str]]:
    """For each id, the names of its shard's task sets (:data:`TASK_SETS`) that hold it, and :data:`HOURS`
    when it waits in an hour list: new (scheduled, no generation) and in the list of its due hour.

    An hour list may also hold stale entries (deleted or requeued tasks, the
    promoter skips them); those do not count, so a task is still in exactly
    one place. Two round trips.
    """
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        shard = keys.shard_of(task_id)
        for name in TASK_SETS:
            pipe.zscore(getattr(keys, name)(shard), task_id)
        pipe.hmget(keys.task(task_id), "st", "gen", "due")
    replies = iter(pipe.execute())
    found: dict[str, frozenset[str]] = {}
    new: list[tuple[str, int]] = []  # (id, due hour) of the tasks an hour list may hold
    for task_id in task_ids:
        found[task_id] = frozenset(name for name in TASK_SETS if next(replies) is not None)
        state, gen, due = next(replies)
        if state == State.SCHEDULED and gen is None and due is not None:
            new.append((task_id, int(due) // TIMER_HOUR_MS))
    pipe = client.pipeline(transaction=False)
    for task_id, hour in new:
        pipe.lpos(keys.hour_list(keys.shard_of(task_id), hour), task_id)
    for (task_id, _), position in zip(new, pipe.execute() if new else []):
        if position is not None:
            found[task_id] |= {HOURS}
    return found


def where(client: StoreClient, keys: Keys, task_id: str) -> frozenset[str]:
    """The task sets that hold ``task_id``."""
    return memberships(client, keys, [task_id])[task_id]


def score(client: StoreClient, keys: Keys, name: str, task_id: str) -> int | None:
    """The score of ``task_id`` in its shard's set ``name`` (``timer``, ``inflight``, ...), or None."""
    value = client.zscore(getattr(keys, name)(keys.shard_of(task_id)), task_id)
    return None if value is None else int(value)


def raw(client: StoreClient, keys: Keys, task_id: str) -> dict[str, str]:
    """The task's hash as stored (short field names, see ``records.FIELDS``)."""
    return t.cast(dict[str, str], client.hgetall(keys.task(task_id)))


def stats(client: StoreClient, keys: Keys) -> dict[tuple[str, str], int]:
    """The statistics hashes read directly, summed over the shards, zeros left out."""
    totals: dict[tuple[str, str], int] = {}
    for shard in range(keys.shards):
        for field, value in client.hgetall(keys.stats(shard)).items():
            state, _, topic = str(field).partition("|")
            totals[(state, topic)] = totals.get((state, topic), 0) + int(value)
    return {k: v for k, v in totals.items() if v}


def history(client: StoreClient, keys: Keys, task_id: str) -> list[str]:
    """The names of the task's recorded lifecycle events, oldest first."""
    return [json.loads(e)["event"] for e in client.lrange(keys.history(task_id), 0, -1)]


NOWHERE = "http://127.0.0.1:9/"
"""A callback nothing listens on (store tests never deliver)."""

HOUR_MS = 3_600_000


class View:
    """What one store holds, read straight from Redis through its :class:`Keys` (not through the store's API)."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.client: StoreClient = store.redis
        self.keys: Keys = store.keys

    def raw(self, task_id: str) -> dict[str, str]:
        return raw(self.client, self.keys, task_id)

    def where(self, task_id: str) -> frozenset[str]:
        return where(self.client, self.keys, task_id)

    def score(self, name: str, task_id: str) -> int | None:
        return score(self.client, self.keys, name, task_id)

    def stats(self) -> dict[tuple[str, str], int]:
        return stats(self.client, self.keys)

    def history(self, task_id: str) -> list[str]:
        return history(self.client, self.keys, task_id)

    def members(self, name: str, shard: int) -> list[str]:
        """The ids in set ``name`` of ``shard``, in score order."""
        return [str(m) for m in self.client.zrange(getattr(self.keys, name)(shard), 0, -1)]


def parked(store: TaskStore, now: int, topic: str = "t", delay_ms: int = HOUR_MS, **fields: t.Any) -> str:
    """A scheduled task (in the timer), due ``delay_ms`` after ``now``."""
    created = store.create(NewTask(topic, NOWHERE, "x", now + delay_ms, fields.pop("max_retry", 0), **fields), now)
    assert created.dispatch is None
    return created.task_id


def queued(store: TaskStore, now: int, topic: str = "t", **fields: t.Any) -> Dispatch:
    """A queued task due ``now`` (created inside the direct window): its dispatch (id, generation 1)."""
    created = store.create(NewTask(topic, NOWHERE, "x", now, fields.pop("max_retry", 0), **fields), now)
    assert created.dispatch is not None
    return created.dispatch


def delivering(store: TaskStore, now: int, topic: str = "t", **fields: t.Any) -> Dispatch:
    """A task whose attempt has started (claimed at ``now``): its dispatch."""
    dispatch = queued(store, now, topic, **fields)
    assert store.claim(dispatch.task_id, dispatch.gen, now, store.lease_ms) is not None
    return dispatch


def settled(store: TaskStore, now: int, outcome: Outcome, topic: str = "t", due_ms: int | None = None,
            **fields: t.Any) -> str:
    """A task whose first attempt ended with ``outcome`` at ``now`` (due again at ``due_ms``, default in an hour)."""
    dispatch = delivering(store, now, topic, **fields)
    assert store.settle(dispatch.task_id, dispatch.gen, now, outcome,
                        due_ms=now + HOUR_MS if due_ms is None else due_ms, code=500, error="boom")
    return dispatch.task_id
