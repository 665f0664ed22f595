"""Create and delivery throughput with 1, 2 or 3 workers and 1 or 3 API nodes on one Redis.

Each combination gets a fresh :class:`~bench.stack.Stack` (its own Redis and
receiver): ``httpqueue api`` processes on their own loopback ports (each with
its defaults: granian, one process per core) and ``httpqueue worker``
processes (prefork, one process per core each). Then:

* single creates: ``wrk`` on ``POST /v1/tasks``, one ``wrk`` per API node at
  once, the connections split between them (30 in all), tasks due in a day;
* batches: the same with ``POST /v1/tasks/batch``, 1,000 tasks a request
  (6 connections in all);
* delivery: 20,000 tasks due at one instant created through the first API
  node's batch endpoint (the delivery scenario of :mod:`bench.scenarios`),
  callbacks per second from the first arrival to the last.

On one 2-core box more processes cannot add cores: the figures say what
running more nodes costs or gains there, not how a multi-machine
deployment scales.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import time
import typing as t

from bench.load import WrkResult, task_body, wrk_post
from bench.report import ScenarioResult, machine
from bench.scenarios import DAY, _create_due_at, _measure_delivery
from bench.stack import BENCH_SETTINGS, Stack

CREATE_CONNECTIONS = 30
BATCH_CONNECTIONS = 6
BATCH_SIZE = 1000
SECONDS = 5.0
DELIVERY_TASKS = 20_000


def matrix(workers: t.Sequence[int], apis: t.Sequence[int], emit: t.Callable[[dict[str, t.Any]], None],
           seconds: float = SECONDS, tasks: int = DELIVERY_TASKS) -> list[dict[str, t.Any]]:
    """Every (workers, API nodes) combination, one JSON document each."""
    lines = []
    for api_nodes in apis:
        for count in workers:
            print(f"[scale] nodes: {count} worker(s), {api_nodes} API node(s)", file=sys.stderr, flush=True)
            line = run(count, api_nodes, seconds, tasks)
            lines.append(line)
            emit(line)
    return lines


def run(workers: int, api_nodes: int, seconds: float, tasks: int) -> dict[str, t.Any]:
    """One combination on a fresh stack."""
    load_before = [round(x, 2) for x in os.getloadavg()]
    result = ScenarioResult("nodes", params={"workers": workers, "api_nodes": api_nodes, "seconds": seconds,
                                             "create_connections": CREATE_CONNECTIONS,
                                             "batch_connections": BATCH_CONNECTIONS, "delivery_tasks": tasks})
    with Stack(hq_workers=workers) as stack:
        stack.start_base().start_httpqueue()
        bases = [stack.api_url("")] + [stack.start_api(f"api{n}", [sys.executable, "-m", "httpqueue", "api"])
                                       for n in range(1, api_nodes)]
        url = stack.receiver.url()
        single = json.dumps(task_body(url, DAY))
        _spread(bases, "/v1/tasks", single, 1, CREATE_CONNECTIONS)  # warm every API process
        run_single = _spread(bases, "/v1/tasks", single, seconds, CREATE_CONNECTIONS)
        batch = json.dumps({"tasks": [task_body(url, DAY, n) for n in range(BATCH_SIZE)]})
        run_batch = _spread(bases, "/v1/tasks/batch", batch, seconds, BATCH_CONNECTIONS)
        result.add("create_per_s", run_single.rps, "req/s")
        result.add("create_p99", run_single.p99_us / 1000, "ms")
        result.add("batch_tasks_per_s", (run_batch.requests - run_batch.status_errors) * BATCH_SIZE
                   / (run_batch.duration_us / 1e6), "tasks/s")
        result.add("create_errors", run_single.status_errors + run_single.socket_errors
                   + run_batch.status_errors + run_batch.socket_errors, "req")
        due_at = time.time() + max(5.0, tasks / 5000 + 3)
        result.params["delivery_create_s"] = round(_create_due_at(stack, tasks, due_at, BATCH_SIZE), 2)
        _measure_delivery(result, stack, tasks, due_at, None, None)
        result.add("worker_rss", stack.worker_rss() / 2**20, "MiB")
    doc = json.loads(result.json_line(machine()))
    doc.update(bench="scale", part="nodes", load=load_before, load_after=[round(x, 2) for x in os.getloadavg()],
               figures={name: f["value"] for name, f in doc["figures"].items()})
    doc["params"]["timer_horizon_s"] = float(BENCH_SETTINGS["timer_horizon"])
    return doc


def _spread(bases: t.Sequence[str], path: str, body: str, seconds: float, connections: int) -> WrkResult:
    """``wrk`` on every API node at once, ``connections`` split between them; the runs summed."""
    share = max(1, connections // len(bases))
    threads = 2 if len(bases) == 1 else 1
    with concurrent.futures.ThreadPoolExecutor(len(bases)) as pool:
        runs = list(pool.map(lambda base: wrk_post(base + path, body, seconds=seconds, connections=share,
                                                   threads=threads), bases))
    duration = max(r.duration_us for r in runs)
    return WrkResult(requests=sum(r.requests for r in runs), duration_us=duration,
                     status_errors=sum(r.status_errors for r in runs),
                     socket_errors=sum(r.socket_errors for r in runs),
                     p50_us=max(r.p50_us for r in runs), p99_us=max(r.p99_us for r in runs),
                     max_us=max(r.max_us for r in runs), mean_us=sum(r.mean_us for r in runs) / len(runs))
