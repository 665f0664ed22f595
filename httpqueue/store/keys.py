"""Every Redis key of the task store is built here, and nowhere else.

Keys carry a Redis Cluster hash tag: the shard number. A task's own keys and
the per-shard timer, in-flight, done and statistics keys of its shard share the
tag, so every Lua script touches keys of one slot only. The shard of a task is
a pure function of its id (CRC32 modulo ``shards``), so any process finds it
without a lookup, and the "global" structures (timer, statistics) are split
into ``shards`` parts that the promoter walks one by one. A shard's timer is
two-level: a sorted set for what is due within about an hour, and lists of
ids per due hour for later (:meth:`Keys.hours`), which cost far less memory
per task.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import typing as t
import zlib

EVENTS_SUFFIX = "ev"
"""Last part of a shard's event stream key (``common.lua`` builds it from the stats key with the same suffix)."""

EXPORT_SWITCH_SUFFIX = "evmax"
"""Last part of a shard's export switch key (read by ``common.lua``)."""

TIMER_HOUR_MS = 3_600_000
"""Length of the hours that name the hour lists (:meth:`Keys.hour_list`); ``HOUR_MS`` of ``common.lua`` is the same."""


@dataclasses.dataclass(frozen=True)
class Keys:
    """Key builder for one prefix and shard count."""

    prefix: str = "hq"
    shards: int = 16

    def shard_of(self, task_id: str) -> int:
        return zlib.crc32(task_id.encode()) % self.shards

    def tag(self, shard: int) -> str:
        return f"{self.prefix}:{{{shard}}}"

    def task(self, task_id: str) -> str:
        """Hash with the task's fields (see ``store.FIELDS``)."""
        return f"{self.tag(self.shard_of(task_id))}:t:{task_id}"

    def task_prefix(self, shard: int) -> str:
        """What a Lua script prepends to an id to get its task key."""
        return f"{self.tag(shard)}:t:"

    def history(self, task_id: str) -> str:
        """List of the task's lifecycle events, newest last, capped."""
        return f"{self.tag(self.shard_of(task_id))}:hist:{task_id}"

    def history_prefix(self, shard: int) -> str:
        return f"{self.tag(shard)}:hist:"

    def timer(self, shard: int) -> str:
        """Sorted set: ids of parked tasks scored by due time (ms)."""
        return f"{self.tag(shard)}:timer"

    def hours(self, shard: int) -> str:
        """Sorted set: the hours (``due // TIMER_HOUR_MS``) that have an :meth:`hour_list` in ``shard``, scored by hour.

        Far-future tasks wait in a list per due hour instead of the timer: a
        list entry costs about 20 B where a sorted-set entry costs about 128 B,
        and a promoter pass moves an hour's ids into the timer about an hour
        before the hour starts (``promote.lua``). Small: one member per hour.
        """
        return f"{self.tag(shard)}:timer:h"

    def hour_list_prefix(self, shard: int) -> str:
        """What a Lua script appends an hour number to for its list (``hour_list`` of ``common.lua``)."""
        return f"{self.hours(shard)}:"

    def hour_list(self, shard: int, hour: int) -> str:
        """List: ids of the far-future tasks of ``shard`` created due within ``hour``, in creation order.

        Written only by ``create.lua``; an id stays until a promoter moves its
        hour, even if the task is deleted or moved meanwhile (those entries are
        skipped then), so no delete has to search a list.
        """
        return f"{self.hour_list_prefix(shard)}{hour}"

    def inflight(self, shard: int) -> str:
        """Sorted set: ids handed to Celery, scored by the time their lease runs out (ms)."""
        return f"{self.tag(shard)}:inflight"

    def done(self, shard: int) -> str:
        """Sorted set: ids of finished tasks, scored by the time they are purged (ms)."""
        return f"{self.tag(shard)}:done"

    def held(self, shard: int) -> str:
        """Sorted set: ids of tasks of paused topics, scored by their due time (ms), until resumed."""
        return f"{self.tag(shard)}:held"

    def dead(self, shard: int) -> str:
        """Sorted set: ids of tasks that failed for good (dead letters), scored by their purge time (ms)."""
        return f"{self.tag(shard)}:dead"

    def stats(self, shard: int) -> str:
        """Hash ``state|topic`` -> number of tasks of this shard in that state."""
        return f"{self.tag(shard)}:stats"

    def for_create(self, shard: int) -> CreateKeys:
        """What ``create.lua`` is given for ``shard``, built once per shard: a single create needed six key
        methods and a dozen f-strings on every request for keys that never change."""
        return _create_keys(self, shard)

    def topic_tag(self, topic: str) -> str:
        """Hash tag of one topic's control keys: a digest, so any topic name (even with braces) is safe."""
        return f"{self.prefix}:{{tq:{hashlib.sha1(topic.encode()).hexdigest()[:16]}}}"

    def for_topic(self, topic: str) -> TopicKeys:
        tag = self.topic_tag(topic)
        return TopicKeys(config=f"{tag}:cfg", running=f"{tag}:running", rate=f"{tag}:rate", breaker=f"{tag}:breaker")

    def topics(self) -> str:
        """Set of topics that have settings (pause, limits). Touched only when settings change."""
        return f"{self.prefix}:topics"

    def worker_heartbeat(self, name: str) -> str:
        """String with an expiry that says a worker's promoter is alive (no hash tag needed)."""
        return f"{self.prefix}:worker:{name}"

    def workers(self) -> str:
        """Sorted set: names of workers scored by the time their heartbeat runs out (ms, Redis's clock).

        "Is any worker alive" is then one ``ZCOUNT`` instead of a ``SCAN`` over
        the per-worker keys (see :mod:`httpqueue.health`).
        """
        return f"{self.prefix}:workers"

    def owned(self, shard: int, incarnation: str) -> str:
        """Sorted set: ids of ``shard`` whose attempt worker ``incarnation`` claimed, scored by lease expiry (ms).

        Written by ``claim.lua``; read by ``orphans.lua`` when the incarnation's
        heartbeat stops (see :mod:`httpqueue.nodes`). Entries past their lease
        are trimmed by the next claim and the key expires a while after the
        last one, so it never holds more than one lease's worth of claims.
        """
        return f"{self.tag(shard)}:owned:{incarnation}"

    def holding(self, shard: int, incarnation: str) -> str:
        """Sorted set: ``<id>|<generation>`` of ``shard`` whose delivery message worker ``incarnation`` holds.

        Written by ``hold.lua`` (with the Redis broker, a worker keeps ETA
        messages in memory until due); read by ``orphans.lua``, which releases
        a task only while it is still queued under that generation. Scored by
        due time + lease; trimmed by the next note, and the key expires a while
        after its last entry.
        """
        return f"{self.tag(shard)}:holding:{incarnation}"

    def nodes_tag(self) -> str:
        """Hash tag of the node registry: one slot holds it (a few entries per process)."""
        return f"{self.prefix}:{{nodes}}"

    def nodes_info(self) -> str:
        """Hash ``incarnation`` -> the node's description and load (JSON), rewritten by each heartbeat."""
        return f"{self.nodes_tag()}:info"

    def nodes_live(self, role: str) -> str:
        """Sorted set: incarnations of one role (``api``, ``worker``) scored by heartbeat expiry (ms, Redis's clock)."""
        return f"{self.nodes_tag()}:{role}"

    def series(self, shard: int, minute: int) -> str:
        """Hash of one minute's delivery statistics in ``shard`` (outcome counts, lateness histogram)."""
        return f"{self.tag(shard)}:series:{minute}"

    def events(self, shard: int) -> str:
        """Stream of the shard's lifecycle events for ``httpqueue export``, written only while export is on.

        The scripts find it (and :meth:`export_switch`) from the shard's stats
        key they already hold: ``<tag>:stats`` -> ``<tag>:ev`` (``emit_event`` in
        ``common.lua``), so no call site passes another key.
        """
        return f"{self.tag(shard)}:{EVENTS_SUFFIX}"

    def export_switch(self, shard: int) -> str:
        """String: the ``MAXLEN ~`` bound of :meth:`events`; absent or 0 means the scripts write no events."""
        return f"{self.tag(shard)}:{EXPORT_SWITCH_SUFFIX}"

    def export_counts(self, shard: int) -> str:
        """Hash ``<group>:read`` / ``<group>:dropped`` / ``<group>:lost``: what each exporter group read and missed;
        ``<group>:acked``: Unix ms of its last acknowledgement in the shard."""
        return f"{self.tag(shard)}:evcount"

    def schedule_tag(self) -> str:
        """Hash tag of the schedules: they are few, so one slot holds them all."""
        return f"{self.prefix}:{{sched}}"

    def schedule_defs(self) -> str:
        """Hash ``schedule id`` -> its definition (JSON)."""
        return f"{self.schedule_tag()}:defs"

    def schedule_next(self) -> str:
        """Sorted set: ids of active schedules, scored by their next tick (ms)."""
        return f"{self.schedule_tag()}:next"

    def for_task(self, task_id: str) -> TaskKeys:
        shard = self.shard_of(task_id)
        return TaskKeys(
            task=self.task(task_id), timer=self.timer(shard), inflight=self.inflight(shard),
            done=self.done(shard), stats=self.stats(shard), history=self.history(task_id),
            held=self.held(shard), dead=self.dead(shard),
        )


@dataclasses.dataclass(frozen=True)
class TaskKeys:
    """The keys one task's scripts touch, all in the task's shard.

    Every task script receives all of them, in this order (:meth:`as_list`),
    so ``KEYS[n]`` means the same in each script (named once in ``common.lua``).
    """

    task: str
    timer: str
    inflight: str
    done: str
    stats: str
    history: str
    held: str
    dead: str

    def as_list(self) -> list[str]:
        """The keys in the order every task script reads them: ``K_TASK`` .. ``K_DEAD`` of ``common.lua``."""
        return [self.task, self.timer, self.inflight, self.stats, self.done, self.history, self.held, self.dead]


@dataclasses.dataclass(frozen=True)
class TopicKeys:
    """The keys of one topic's controls, all under the topic's own hash tag.

    ``config``: hash of settings (paused, rate, concurrency, failure callback);
    ``running``: sorted set of attempts in flight, scored by lease expiry (ms);
    ``rate``: the GCRA theoretical arrival time (ms); ``breaker``: per callback
    host, consecutive failures and open-until time.
    """

    config: str
    running: str
    rate: str
    breaker: str


class CreateKeys(t.NamedTuple):
    """A shard's keys as ``create.lua`` takes them (:meth:`Keys.for_create`)."""

    shard_keys: tuple[str, str, str, str]
    """KEYS before the tasks' own: the timer, the in-flight set, the stats, the hours set."""
    task_prefix: str
    hour_list_prefix: str


@functools.lru_cache(maxsize=1024)
def _create_keys(keys: Keys, shard: int) -> CreateKeys:
    return CreateKeys((keys.timer(shard), keys.inflight(shard), keys.stats(shard), keys.hours(shard)),
                      keys.task_prefix(shard), keys.hour_list_prefix(shard))
