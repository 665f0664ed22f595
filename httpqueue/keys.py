"""Every Redis key of the task store is built here, and nowhere else.

Keys carry a Redis Cluster hash tag: the shard number. A task's own keys and
the per-shard timer, in-flight, done and statistics keys of its shard share the
tag, so every Lua script touches keys of one slot only. The shard of a task is
a pure function of its id (CRC32 modulo ``shards``), so any process finds it
without a lookup, and the "global" structures (timer, statistics) are split
into ``shards`` parts that the promoter walks one by one.
"""
from __future__ import annotations

import dataclasses
import zlib


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
        return f"{self.tag(self.shard_of(task_id))}:task:{task_id}"

    def task_prefix(self, shard: int) -> str:
        """What a Lua script prepends to an id to get its task key."""
        return f"{self.tag(shard)}:task:"

    def history(self, task_id: str) -> str:
        """List of the task's lifecycle events, newest last, capped."""
        return f"{self.tag(self.shard_of(task_id))}:hist:{task_id}"

    def history_prefix(self, shard: int) -> str:
        return f"{self.tag(shard)}:hist:"

    def timer(self, shard: int) -> str:
        """Sorted set: ids of parked tasks scored by due time (ms)."""
        return f"{self.tag(shard)}:timer"

    def inflight(self, shard: int) -> str:
        """Sorted set: ids handed to Celery, scored by the time their lease runs out (ms)."""
        return f"{self.tag(shard)}:inflight"

    def done(self, shard: int) -> str:
        """Sorted set: ids of finished tasks, scored by the time they are purged (ms)."""
        return f"{self.tag(shard)}:done"

    def stats(self, shard: int) -> str:
        """Hash ``state|topic`` -> number of tasks of this shard in that state."""
        return f"{self.tag(shard)}:stats"

    def worker_heartbeat(self, name: str) -> str:
        """String with an expiry that says a worker's promoter is alive (no hash tag needed)."""
        return f"{self.prefix}:worker:{name}"

    def for_task(self, task_id: str) -> TaskKeys:
        shard = self.shard_of(task_id)
        return TaskKeys(
            task=self.task(task_id), timer=self.timer(shard), inflight=self.inflight(shard),
            done=self.done(shard), stats=self.stats(shard), history=self.history(task_id),
        )


@dataclasses.dataclass(frozen=True)
class TaskKeys:
    """The keys one task's scripts touch, all in the task's shard."""

    task: str
    timer: str
    inflight: str
    done: str
    stats: str
    history: str
