"""Topic settings and schedules with etcd as their source of truth: the API's writes go here.

Each write is a compare-and-swap on the key's ``mod_revision`` (an etcd
transaction): read the document, change it, write it only if nobody wrote
since; when someone did, read again and redo the change. Two concurrent edits
of one topic therefore both land, in some order. After the write the node
copies the new document into Redis itself (the API answers with the new
settings at once, and a resume moves the held tasks here); every other node's
watch copies it too, which the revision guard makes harmless.

Reads (``get``, ``all``, ``due``) stay on the Redis copy: it is what the Lua
scripts act on, and it keeps answering while etcd is away. Writes while etcd
is away raise :class:`~httpqueue.etcd.client.EtcdUnavailable`, a 503: nothing
was changed, and the client retries.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import typing as t

from httpqueue.config import Settings
from httpqueue.etcd.client import EtcdClient, EtcdUnavailable
from httpqueue.etcd.keys import EtcdKeys
from httpqueue.store.schedules import Schedule, ScheduleNotFound, ScheduleStore, next_tick_ms
from httpqueue.store.tasks import TaskStore
from httpqueue.store.topics import TopicControls, TopicSettings

CAS_ATTEMPTS = 100
"""Read-change-write rounds before an edit gives up (a 503): only a storm of edits to one key gets there."""

TICK_LEASE = 60
"""Seconds a cron tick's claim lives: if its node dies before creating the task, another fires it after this."""

CLAIM_PAUSE = 10.0
"""Seconds a ticker takes ticks without asking etcd after etcd failed to answer a claim (each try may take
``etcd_timeout`` per endpoint, and ticks must stay on time)."""

Change = t.Callable[[t.Optional[str]], t.Optional[str]]


def edit(client: EtcdClient, key: str, change: Change) -> tuple[int, str | None]:
    """Apply ``change`` (old value -> new value, None: absent) to ``key`` atomically; the write's revision and value."""
    for _ in range(CAS_ATTEMPTS):
        kv = client.get(key)
        new = change(kv.value if kv else None)
        revision = client.swap(key, new, kv.mod_revision if kv else 0)
        if revision:
            return revision, new
    raise EtcdUnavailable(f"gave up editing {key}: changed by others {CAS_ATTEMPTS} times in a row")


class EtcdTopicControls(TopicControls):
    """:class:`TopicControls` whose settings changes go to etcd first."""

    def __init__(self, store: TaskStore, settings: Settings, client: EtcdClient, keys: EtcdKeys) -> None:
        super().__init__(store, settings)
        self.etcd = client
        self.ekeys = keys

    def _edit(self, topic: str, changes: t.Mapping[str, t.Any]) -> int:
        """Change fields of the topic's document in etcd, then mirror it here; tasks a resume moved."""
        def change(old: str | None) -> str:
            current = TopicSettings.from_json(old) if old else TopicSettings()
            return dataclasses.replace(current, **changes).to_json()

        revision, new = edit(self.etcd, self.ekeys.topic(topic), change)
        return self.mirror(topic, TopicSettings.from_json(t.cast(str, new)), revision)

    def configure(self, topic: str, changes: t.Mapping[str, t.Any]) -> None:
        self._edit(topic, changes)

    def pause(self, topic: str) -> None:
        self._edit(topic, {"paused": True})

    def resume(self, topic: str) -> int:
        """Returns the held tasks this node moved (another node's watch may have moved them first: then 0)."""
        return self._edit(topic, {"paused": False})


class EtcdScheduleStore(ScheduleStore):
    """:class:`ScheduleStore` whose definitions live in etcd; a tick fires on the node that claims it there."""

    def __init__(self, store: TaskStore, client: EtcdClient, keys: EtcdKeys) -> None:
        super().__init__(store)
        self.etcd = client
        self.ekeys = keys
        self._lease = 0
        self._lease_until = 0.0
        self._lost: set[tuple[str, int]] = set()
        self._skip_etcd_until = 0.0
        self._lock = threading.Lock()

    def save(self, schedule: Schedule, now_ms: int) -> int:
        revision = self.etcd.put(self.ekeys.schedule(schedule.id), json.dumps(schedule.definition()))
        self.mirror(schedule.id, schedule.definition(), revision, now_ms)
        return next_tick_ms(schedule.cron, schedule.timezone, now_ms)

    def delete(self, schedule_id: str) -> None:
        def change(old: str | None) -> None:
            if old is None:
                raise ScheduleNotFound(f"no schedule with id {schedule_id}")
            return None

        revision, _ = edit(self.etcd, self.ekeys.schedule(schedule_id), change)
        self.mirror(schedule_id, None, revision, 0)

    def set_paused(self, schedule_id: str, paused: bool, now_ms: int) -> tuple[Schedule, int | None]:
        def change(old: str | None) -> str:
            if old is None:
                raise ScheduleNotFound(f"no schedule with id {schedule_id}")
            return json.dumps({**json.loads(old), "paused": paused})

        revision, new = edit(self.etcd, self.ekeys.schedule(schedule_id), change)
        self.mirror(schedule_id, json.loads(t.cast(str, new)), revision, now_ms)
        return self.get(schedule_id)

    def due(self, now_ms: int) -> list[tuple[Schedule, int]]:
        """The due ticks this node claimed in etcd (every node asks; the first create of a tick's key wins).

        While etcd is unreachable every node takes every due tick, as without
        etcd: the task's id ``<schedule>@<tick>`` still makes the store refuse
        all creates but one, so a tick still makes one task.
        """
        return [(schedule, tick) for schedule, tick in super().due(now_ms) if self.claim(schedule.id, tick)]

    def claim(self, schedule_id: str, tick: int) -> bool:
        """Whether this node fires ``tick`` of ``schedule_id``: it created the tick's key (on a lease)."""
        if (schedule_id, tick) in self._lost:
            return False
        if time.monotonic() < self._skip_etcd_until:
            return True
        try:
            won = self.etcd.create(self.ekeys.tick(schedule_id, tick), str(tick), self._tick_lease())
        except EtcdUnavailable:
            self._skip_etcd_until = time.monotonic() + CLAIM_PAUSE  # a ticker must not wait on etcd tick after tick
            return True
        if not won:
            if len(self._lost) > 10_000:
                self._lost.clear()
            self._lost.add((schedule_id, tick))
        return won

    def _tick_lease(self) -> int:
        """One lease for this process's tick claims, granted again every half :data:`TICK_LEASE`."""
        with self._lock:
            if time.monotonic() >= self._lease_until:
                self._lease = self.etcd.grant(TICK_LEASE)
                self._lease_until = time.monotonic() + TICK_LEASE / 2
            return self._lease
