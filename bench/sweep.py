"""How many granian workers and blocking threads: httpqueue's create and batch under each size.

``python -m bench.sweep [--workers 2,3,4] [--threads 1,2,4,8] [--rounds 2] [--seconds 5]``

Starts one Redis and httpqueue's API once per size (``bench/floor.py --app
httpqueue``, i.e. httpqueue's own app and server set-up with other sizes),
plus gunicorn with httpqueue's defaults as the reference; then, in rounds whose
order rotates, ``wrk`` on ``POST /create`` (32 connections) and on
``POST /v1/tasks/batch`` (1,000 tasks a request, 4 connections) for each.
Prints one JSON line per size and a Markdown table of the medians. This is
how ``httpqueue.api.wsgi``'s defaults were chosen (``docs/benchmarks.rst``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import typing as t

from bench.load import task_body, wrk_post
from bench.report import machine
from bench.scenarios import DAY, _median
from bench.stack import Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="2,3,4")
    parser.add_argument("--threads", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--no-gunicorn", action="store_true", help="leave out the gunicorn reference")
    args = parser.parse_args(argv)
    sizes: list[tuple[str, int, int]] = [("granian", int(w), int(th)) for w in args.workers.split(",")
                                         for th in args.threads.split(",")]
    if not args.no_gunicorn:
        sizes.append(("gunicorn", 0, 0))
    load_before = os.getloadavg()
    single: dict[tuple[str, int, int], list[t.Any]] = {}
    batch: dict[tuple[str, int, int], list[t.Any]] = {}
    cpu: dict[tuple[str, int, int], list[float]] = {}
    with Stack() as stack:
        stack.start_base()
        bases, names = {}, {}
        for server, workers, threads in sizes:
            argv_ = [sys.executable, "-m", "bench.floor", "--app", "httpqueue", "--server", server]
            if workers:
                argv_ += ["--workers", str(workers), "--threads", str(threads)]
            names[server, workers, threads] = f"{server}-{workers}x{threads}"
            bases[server, workers, threads] = stack.start_api(names[server, workers, threads], argv_)
            print(f"[sweep] started {server} {workers}x{threads}", file=sys.stderr, flush=True)
        url = stack.receiver.url()
        body = json.dumps(task_body(url, DAY))
        batch_body = json.dumps({"tasks": [task_body(url, DAY, i) for i in range(1000)]})
        for size in sizes:
            wrk_post(bases[size] + "/create", body, seconds=1, connections=args.connections)
        for n in range(args.rounds):
            for size in sizes[n % len(sizes):] + sizes[:n % len(sizes)]:
                before = stack.cpu_seconds(names[size])
                single.setdefault(size, []).append(
                    wrk_post(bases[size] + "/create", body, seconds=args.seconds, connections=args.connections))
                cpu.setdefault(size, []).append((stack.cpu_seconds(names[size]) - before) * 1e6
                                                / max(1, single[size][-1].requests))
                batch.setdefault(size, []).append(
                    wrk_post(bases[size] + "/v1/tasks/batch", batch_body, seconds=args.seconds,
                             connections=args.batch_connections))
                last = batch[size][-1]
                tasks_per_s = (last.requests - last.status_errors) * 1000 / (last.duration_us / 1e6)
                print(f"[sweep] round {n} {size}: {single[size][-1].rps:.0f} req/s, {tasks_per_s:.0f} tasks/s",
                      file=sys.stderr, flush=True)
    info = {**machine(), "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}
    rows = ["| server | workers x threads | create req/s (median) | per round | p50 ms | p99 ms | CPU us/req "
            "| batch tasks/s | errors |", "|---|---|---|---|---|---|---|---|---|"]
    for size in sizes:
        server, workers, threads = size
        runs, batches = single[size], batch[size]
        tasks = [(b.requests - b.status_errors) * 1000 / (b.duration_us / 1e6) for b in batches]
        doc = {"server": server, "workers": workers, "threads": threads,
               "create_rps": round(_median([r.rps for r in runs])), "create_rps_rounds": [round(r.rps) for r in runs],
               "create_p50_ms": round(_median([r.p50_us / 1000 for r in runs]), 1),
               "create_p99_ms": round(_median([r.p99_us / 1000 for r in runs]), 1),
               "create_cpu_us": round(_median(cpu[size])), "create_cpu_rounds": [round(x) for x in cpu[size]],
               "batch_tasks_per_s": round(_median(tasks)), "batch_rounds": [round(x) for x in tasks],
               "errors": sum(r.status_errors + r.socket_errors for r in runs + batches)}
        print(json.dumps({"sweep": doc, **info}, separators=(",", ":")))
        label = f"{workers}x{threads}" if workers else "defaults"
        rows.append(f"| {server} | {label} | {doc['create_rps']:,} | {doc['create_rps_rounds']} | "
                    f"{doc['create_p50_ms']} | {doc['create_p99_ms']} | {doc['create_cpu_us']} | "
                    f"{doc['batch_tasks_per_s']:,} | {doc['errors']} |")
    print()
    print(f"load average before {info['load_before']}, after {info['load_after']}")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
