"""What exporting task events costs Redis: CPU per script call and bytes per event, export on against off.

``python -m bench.export_cost [--tasks 3000] [--rounds 7]``

A fresh ``redis-server`` on a free loopback port (16 shards, in-process store
calls, no worker); each round creates ``--tasks`` tasks due now, claims and
settles each, and creates as many parked tasks in batches of 100, once with
export on and once off (the order alternates from round to round, so a slow
spell of the shared machine does not fall on one side). Redis's own CPU per
script call comes from ``INFO commandstats`` (what bounds a Redis's
throughput, and far less sensitive to the machine's load than client-side
times); bytes per event from ``MEMORY USAGE`` of the streams over their length.
Prints one JSON line: medians per side, the differences, cores and load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import typing as t
from pathlib import Path

from httpqueue.config import Settings
from httpqueue.context import Context
from httpqueue.embedded import EmbeddedRedis, free_port
from httpqueue.export import switch
from httpqueue.states import Outcome
from httpqueue.store.records import NewTask

SHARDS = 16
CALLBACK = "http://127.0.0.1:9/x"
FIGURES = ("create_us", "claim_us", "settle_us", "batch_us_per_task", "bytes_per_event", "events_per_task")


def evalsha_usec_per_call(client: t.Any, action: t.Callable[[], object]) -> float:
    """Redis's CPU per ``EVALSHA`` while ``action`` runs (the statistics are reset first)."""
    client.config_resetstat()
    action()
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return float(stats.get("usec", 0)) / max(int(stats.get("calls", 0)), 1)


def one_round(url: str, export_on: bool, tasks: int, tag: str) -> dict[str, float]:
    settings = Settings.load({"redis_url": url, "key_prefix": f"cost{tag}{int(export_on)}", "shards": SHARDS,
                              "callback_allow": ("127.0.0.0/8",)}, environ={})
    ctx = Context(settings)
    store, client = ctx.store, ctx.store.redis
    if export_on:
        switch.enable(client, ctx.keys, 100_000)
    now = int(time.time() * 1000)
    dispatches: list[t.Any] = []

    def create() -> None:
        for i in range(tasks):
            dispatches.append(store.create(NewTask("bench", CALLBACK, {"i": i}, now, 3), now).dispatch)

    event = {"event": "attempt", "t": now, "n": 1, "outcome": "succeeded", "code": 0, "ms": 5.1, "error": None,
             "late_ms": 3}
    figures = {"create_us": evalsha_usec_per_call(client, create)}
    figures["claim_us"] = evalsha_usec_per_call(
        client, lambda: [store.claim(d.task_id, d.gen, now, store.lease_ms) for d in dispatches])
    figures["settle_us"] = evalsha_usec_per_call(
        client, lambda: [store.settle(d.task_id, d.gen, now + 5, Outcome.SUCCEEDED, event=event) for d in dispatches])
    batch = evalsha_usec_per_call(client, lambda: [
        store.create_many([NewTask("bench", CALLBACK, {"i": i}, now + 3_600_000, 3) for i in range(100)], now)
        for _ in range(tasks // 100)])
    figures["batch_us_per_task"] = batch * SHARDS / 100  # one script call per shard for 100 tasks
    streams = [ctx.keys.events(shard) for shard in range(SHARDS)]
    events = sum(client.xlen(key) for key in streams) if export_on else 0
    stream_bytes = sum(client.memory_usage(key) or 0 for key in streams) if export_on else 0
    figures["bytes_per_event"] = stream_bytes / max(events, 1)
    figures["events_per_task"] = events / (2 * tasks)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.export_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedRedis(Path(folder), port=free_port(), appendonly=False).start()
        try:
            for n in range(args.rounds):
                for export_on in ((False, True) if n % 2 else (True, False)):
                    rows[export_on].append(one_round(server.url, export_on, args.tasks, str(n)))
        finally:
            server.stop()
    medians = {side: {name: round(statistics.median(r[name] for r in rows[side]), 1) for name in FIGURES}
               for side in (False, True)}
    print(json.dumps({
        "scenario": "export_cost", "cores": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()], "tasks": args.tasks, "rounds": args.rounds,
        "export_off": medians[False], "export_on": medians[True],
        "difference": {name: round(medians[True][name] - medians[False][name], 1) for name in FIGURES[:4]}}))


if __name__ == "__main__":
    main()
