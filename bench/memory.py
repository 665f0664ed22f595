"""Where Redis's bytes per pending task go, measured on the server.

A pending (parked) task is two things in Redis: its hash ``hq:{s}:t:<id>``
(a key of the main keyspace) and an entry in its shard's timer sorted set
``hq:{s}:timer`` or, when due more than an hour ahead, in the list of its due
hour ``hq:{s}:timer:h:<hour>`` (``Keys.hour_list``). :func:`measure` takes
``used_memory`` (summed over the masters) and splits it into:

* ``task_hash``: mean ``MEMORY USAGE ... SAMPLES 0`` of task hashes picked at
  random from the timers and hour lists (key string, dict entry, object header,
  listpack, each as the allocator rounds it);
* ``timer``: ``MEMORY USAGE`` of every timer, hours set and hour list divided
  by the tasks (skiplist node, member string, dict entry and bucket of a zset;
  a list's share of its quicklist nodes and listpacks, and its key);
* ``stats``: the per-shard counters (a constant, shared by all tasks);
* ``keyspace_table``: the main dictionary's bucket array, 8 bytes per slot,
  sized to a power of two (``MEMORY STATS``' ``overhead.hashtable.main`` less
  the dict entry and object header per key it also counts in Redis 7.0, which
  ``MEMORY USAGE`` already gives the task hash);
* ``other``: what ``used_memory`` grew by beyond those (allocator and
  estimation slack).

:func:`listpack_bytes` recomputes a hash's listpack from its fields, byte by
byte as Redis encodes it, so the report can say what each field costs before
the allocator rounds the whole up to its size class.
"""
from __future__ import annotations

import dataclasses
import random
import typing as t

from httpqueue.store.keys import Keys

from bench.stores import StoreTarget

SAMPLE_TASKS = 200
ZSET_SAMPLES = 1000
"""Elements ``MEMORY USAGE`` looks at per timer (it extrapolates from them)."""

KEY_OVERHEAD = 24 + 16
"""Bytes per key that Redis 7.0's ``overhead.hashtable.main`` counts besides the buckets: dictEntry and robj."""

JEMALLOC_CLASSES = (8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768,
                    896, 1024)
"""jemalloc's small size classes (Redis's allocator): an allocation takes the next one up."""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Memory figures summed over the masters at one moment."""

    used_memory: int
    dataset: int
    overhead: int
    keyspace_table: int
    keys: int
    rss: int
    slot_index: int


@dataclasses.dataclass(frozen=True)
class Breakdown:
    """Bytes per pending task, in total and by kind of key."""

    per_task: float
    task_hash: float
    timer: float
    stats: float
    keyspace_table: float
    other: float
    hash_encoding: str
    timer_encoding: str
    listpack_raw: float
    fields: dict[str, str]

    def as_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


def snapshot(target: StoreTarget) -> Snapshot:
    """``INFO memory`` and ``MEMORY STATS`` of every master, summed."""
    used = dataset = overhead = table = keys = rss = slot_index = 0
    for client in target.masters():
        info = client.info("memory")
        stats = client.memory_stats()
        db = stats.get("db.0") or {}
        used += int(info["used_memory"])
        dataset += int(info["used_memory_dataset"])
        overhead += int(info["used_memory_overhead"])
        rss += int(info["used_memory_rss"])
        count = int(client.dbsize())
        table += int(db.get("overhead.hashtable.main", 0)) - count * KEY_OVERHEAD
        slot_index += int(db.get("overhead.hashtable.slot-to-keys", 0))
        keys += count
    return Snapshot(used, dataset, overhead, table, keys, rss, slot_index)


def measure(target: StoreTarget, keys: Keys, pending: int, empty: Snapshot, now: Snapshot) -> Breakdown:
    """Split the growth from ``empty`` to ``now`` over ``pending`` tasks (see the module docstring)."""
    client = target.routed()
    task_sizes, raw_sizes, encoding, fields = _sample_tasks(client, keys)
    timer_total = sum(timer_usage(client, keys, s) for s in range(keys.shards))
    stats_total = sum(usage(client, keys.stats(s), 0) for s in range(keys.shards))
    per_task = (now.used_memory - empty.used_memory) / pending
    task_hash = sum(task_sizes) / len(task_sizes)
    timer = timer_total / pending
    table = (now.keyspace_table - empty.keyspace_table) / pending
    stats = stats_total / pending
    return Breakdown(
        per_task=per_task, task_hash=task_hash, timer=timer, stats=stats, keyspace_table=table,
        other=per_task - task_hash - timer - stats - table, hash_encoding=encoding,
        timer_encoding=str(client.object("encoding", keys.timer(0))), listpack_raw=sum(raw_sizes) / len(raw_sizes),
        fields=fields)


def _sample_tasks(client: t.Any, keys: Keys) -> tuple[list[int], list[int], str, dict[str, str]]:
    """``MEMORY USAGE`` and the recomputed listpack size of task hashes picked at random from the timers."""
    rng = random.Random(7)
    sizes: list[int] = []
    raw: list[int] = []
    encoding, fields = "", {}
    for _ in range(SAMPLE_TASKS):
        task_id = _random_parked(client, keys, rng.randrange(keys.shards), rng)
        if task_id is None:
            continue
        key = keys.task(task_id)
        sizes.append(usage(client, key, 0))
        fields = client.hgetall(key)
        raw.append(listpack_bytes(fields))
        encoding = str(client.object("encoding", key))
    if not sizes:
        raise RuntimeError("no task found in the timers and hour lists")
    return sizes, raw, encoding, fields


def _random_parked(client: t.Any, keys: Keys, shard: int, rng: random.Random) -> str | None:
    """The id of a parked task of ``shard``: from its timer, or from a random hour list when the timer is empty."""
    task_id = client.zrandmember(keys.timer(shard))
    if task_id is not None:
        return str(task_id)
    hour = client.zrandmember(keys.hours(shard))
    if hour is None:
        return None
    key = keys.hour_list(shard, int(hour))
    found = client.lindex(key, rng.randrange(max(1, int(client.llen(key)))))
    return None if found is None else str(found)


def timer_usage(client: t.Any, keys: Keys, shard: int) -> int:
    """``MEMORY USAGE`` of the shard's timer, its hours set and every hour list (one per hour the backlog spans).

    The lists are found through the hours set, not by a ``SCAN`` of the whole
    keyspace (16 of those took minutes at 10^7 tasks).
    """
    lists = [keys.hour_list(shard, int(hour)) for hour in client.zrange(keys.hours(shard), 0, -1)]
    return (usage(client, keys.timer(shard), ZSET_SAMPLES) + usage(client, keys.hours(shard), ZSET_SAMPLES)
            + sum(usage(client, key, ZSET_SAMPLES) for key in lists))


def usage(client: t.Any, key: t.Any, samples: int) -> int:
    """``MEMORY USAGE key SAMPLES n`` (0 for a key that is gone)."""
    return int(client.memory_usage(key, samples=samples) or 0)


def listpack_bytes(fields: t.Mapping[str, str]) -> int:
    """The size of the listpack Redis 7 builds for a small hash with these fields (before allocator rounding)."""
    body = sum(_entry_bytes(s) for pair in fields.items() for s in pair)
    return 6 + body + 1  # header (total bytes, element count), entries, end byte


def allocated(size: int) -> int:
    """What jemalloc hands out for ``size`` bytes (its size class), for sizes up to 1 KiB."""
    return next((c for c in JEMALLOC_CLASSES if c >= size), size)


def _entry_bytes(value: str) -> int:
    """One listpack entry: encoding byte(s) + data, then its back-length (listpack.c's rules)."""
    data = _int_bytes(value)
    if data is None:
        n = len(value.encode())
        data = (1 if n < 64 else 2 if n < 4096 else 5) + n
    return data + (1 if data <= 127 else 2 if data < 16383 else 3)


def _int_bytes(value: str) -> int | None:
    """Encoded size if Redis stores ``value`` as an integer (canonical decimal within int64), else None."""
    try:
        number = int(value)
    except ValueError:
        return None
    if str(number) != value or not -2**63 <= number < 2**63:
        return None
    for size, bits in ((1, 7), (2, 13), (3, 16), (4, 24), (5, 32)):
        low, high = (0, 2**bits - 1) if bits == 7 else (-2**(bits - 1), 2**(bits - 1) - 1)
        if low <= number <= high:
            return size
    return 9
