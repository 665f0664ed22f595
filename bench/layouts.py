"""What a parked task would cost in Redis under other layouts: the evidence for changing ``create.lua``.

``python -m bench.layouts [--tasks 100000]``

A fresh ``redis-server`` (same binary, persistence off); for each layout,
``FLUSHALL``, then the same ``--tasks`` tasks (the scale curve's: callback
``http://127.0.0.1:9/callback/<n>``, content ``{"n": <n>}``, topic ``bench``,
due 1-30 days ahead, 16 shards) written with plain ``HSET``/``SET`` + ``ZADD``
through a pipeline, exactly as the layout would store them. Per layout: the
``used_memory`` delta per task, the mean ``MEMORY USAGE`` of a task's key and
``OBJECT ENCODING``. One JSON line per layout, then a table.

Layouts (each keeps the timer: a sorted set per shard, member = task id):

* ``today``: what ``create.lua`` stores for a parked task: ``tp cb ct due cr st``;
* ``no-st``: without ``st`` (a task in the timer is scheduled; the state is
  written when it leaves the timer);
* ``no-st-due``: without ``st`` and ``due`` (the due time of a parked task is
  its timer score; ``promote.lua`` would read it with ``WITHSCORES`` and write
  ``due`` when it moves the task);
* ``no-st-due-cr``: and without ``cr``, the creation time carried by the id
  instead (a time-ordered id: 48 bits of milliseconds + 80 random bits,
  base64url, still 22 characters);
* ``binary-id``: the last, with the id's 16 bytes raw in the key and the
  timer (the API would show it base64url-encoded);
* ``string``: the task as one packed string value (fields joined by ``\\x1f``)
  instead of a hash, fields as ``no-st-due-cr``;
* ``short-id``: today's fields, an 18-character id (13 random bytes, 104
  bits): the key ``hq:{s}:t:<id>`` is then 28 characters, and its string fits
  the allocator's 32-byte class instead of 48;
* ``short-id-no-st-due``: both; ``short-id-no-st-due-cr``: and without ``cr``;
* ``hour-lists``: today's hash, but the timer as one list of ids per shard
  and due hour (``hq:{s}:tl:<hour>``) plus a sorted set of the hours,
  instead of one sorted-set entry per task;
* ``short-id-no-st-due-lists``: all three.
"""
from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import tempfile
import typing as t
from pathlib import Path

import redis

from bench.memory import listpack_bytes, usage
from httpqueue.embedded import EmbeddedRedis, free_port
from httpqueue.store.keys import Keys

DAY_MS = 86_400_000
NOW_MS = 1_795_663_643_002
LAYOUTS = ("today", "no-st", "no-st-due", "no-st-due-cr", "binary-id", "string", "short-id", "short-id-no-st-due",
           "short-id-no-st-due-cr", "hour-lists", "short-id-no-st-due-lists")


def task_fields(n: int, due: int) -> dict[str, str]:
    """The hash ``create.lua`` writes today for task ``n`` of the scale curve."""
    return {"tp": "bench", "cb": f"http://127.0.0.1:9/callback/{n}", "ct": json.dumps({"n": n}, separators=(",", ":")),
            "due": str(due), "cr": str(NOW_MS), "st": "scheduled"}


def stored(layout: str, fields: dict[str, str]) -> dict[str, str]:
    """The fields a layout keeps in the task's hash (or packs into its string)."""
    drop = {"today": (), "short-id": (), "hour-lists": (), "no-st": ("st",), "no-st-due": ("st", "due"),
            "short-id-no-st-due": ("st", "due"), "short-id-no-st-due-lists": ("st", "due")}.get(
        layout, ("st", "due", "cr"))
    return {k: v for k, v in fields.items() if k not in drop}


def task_id(layout: str, rng: random.Random) -> bytes:
    """22 base64url characters (16 random bytes, as ``new_id`` makes), or the 16 bytes raw for ``binary-id``."""
    if layout.startswith("short-id"):
        return base64.urlsafe_b64encode(rng.getrandbits(104).to_bytes(13, "big")).rstrip(b"=")
    raw = rng.getrandbits(128).to_bytes(16, "big")
    return raw if layout == "binary-id" else base64.urlsafe_b64encode(raw).rstrip(b"=")


def load(client: redis.Redis, layout: str, tasks: int, keys: Keys) -> list[bytes]:
    """Write ``tasks`` parked tasks in ``layout``; returns the task keys."""
    rng = random.Random(5)
    written = []
    pipe = client.pipeline(transaction=False)
    for n in range(tasks):
        due = NOW_MS + rng.randrange(DAY_MS, 30 * DAY_MS)
        ident = task_id(layout, rng)
        shard = keys.shard_of(ident.hex())
        key = keys.task_prefix(shard).encode() + ident
        fields = stored(layout, task_fields(n, due))
        if layout == "string":
            pipe.set(key, "\x1f".join(fields.values()))
        else:
            pipe.hset(key, mapping=t.cast(t.Any, fields))
        if layout.endswith("lists"):  # the timer as one list of ids per shard and due hour, and the hours
            hour = due // 3_600_000
            pipe.rpush(f"{keys.tag(shard)}:tl:{hour}", ident)
            pipe.zadd(keys.timer(shard), {str(hour): hour})
        else:
            pipe.zadd(keys.timer(shard), {ident: due})
        written.append(key)
        if n % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return written


def measure(client: redis.Redis, layout: str, tasks: int) -> dict[str, t.Any]:
    keys = Keys()
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    written = load(client, layout, tasks, keys)
    after = int(client.info("memory")["used_memory"])
    sample = random.Random(3).sample(written, 200)
    key_usage = sum(usage(client, k, 0) for k in sample) / len(sample)
    timers = sum(usage(client, keys.timer(s), 1000) for s in range(keys.shards))
    example = stored(layout, task_fields(12345, NOW_MS + DAY_MS))
    return {"layout": layout, "tasks": tasks, "bytes_per_task": round((after - before) / tasks, 1),
            "task_key_usage": round(key_usage, 1), "timer_per_task": round(timers / tasks, 1),
            "encoding": _text(client.object("encoding", sample[0])),
            "listpack_raw": listpack_bytes(example) if layout != "string" else None,
            "fields": sorted(example)}


def _text(value: t.Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layouts", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="httpqueue-layouts-") as tmp:
        server = EmbeddedRedis(Path(tmp), port=free_port(), appendonly=False).start()
        try:
            client = redis.Redis(host="127.0.0.1", port=server.port)
            rows = []
            for layout in args.layouts.split(","):
                row = measure(client, layout, args.tasks)
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            server.stop()
    base = rows[0]["bytes_per_task"]
    for row in rows:
        print(f"{row['layout']:<14} {row['bytes_per_task']:>6.1f} B/task ({row['bytes_per_task'] - base:+.1f})  "
              f"key {row['task_key_usage']:.0f} B ({row['encoding']}, listpack {row['listpack_raw']})  "
              f"timer {row['timer_per_task']:.0f} B", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
