"""Micro-benchmark of task intake: CPU per task of ``TaskService.create_many`` and ``create`` on a real Redis.

Not a test (pytest does not collect it); run it by hand::

    .venv/bin/python -m tests.perf_intake [--tasks 1000] [--rounds 7] [--level INFO] [--format text]

It starts an embedded Redis on a free port, configures logging as the CLI does
(:func:`httpqueue.logs.configure`, records to stderr: redirect it, e.g.
``2>/dev/null``, so the terminal's speed is not measured) and reports, per task,
the CPU of the calling thread (the request path) and of the whole process
(including a log listener thread, if any), best of ``--rounds``. Redis' own CPU
is not counted (another process). Tasks are due in an hour, so nothing is
published to Celery. Metrics are in multiprocess mode, as under the CLI.
Callbacks (each task's URL differs by its path): a literal IP the policy opens,
a global literal IP (checked, no DNS) and ``localhost`` (a name, resolved
through /etc/hosts: the cheapest possible lookup; a real DNS name costs more).
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import typing as t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--level", default="INFO")
    parser.add_argument("--format", default="text", choices=("text", "json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # as the CLI does: counters are files shared by processes
        measure(args)


def measure(args: argparse.Namespace) -> None:
    from httpqueue import context, logs
    from httpqueue.config import Settings
    from httpqueue.embedded import EmbeddedRedis, free_port
    from httpqueue.services import TaskService

    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(tmp, port=free_port(), appendonly=False).start()
        try:
            settings = Settings.load({"redis_url": server.url, "callback_allow": ("127.0.0.0/8", "::1")},
                                     environ={})
            ctx = context.install(settings)
            logs.configure(args.format, getattr(logging, args.level))
            service = TaskService(ctx, lambda dispatches, now: None)
            flush = getattr(logs, "flush", lambda: None)  # (the code before the log listener had none)
            n = args.tasks

            def run(label: str, call: t.Callable[[], None]) -> None:
                best_thread = best_process = float("inf")
                for _ in range(args.rounds):
                    ctx.store.redis.flushdb()
                    flush()
                    p0, t0 = time.process_time(), time.thread_time()
                    call()
                    t1 = time.thread_time()
                    flush()  # the listener's writing of this round's records counts in the process CPU
                    p1 = time.process_time()
                    best_thread, best_process = min(best_thread, t1 - t0), min(best_process, p1 - p0)
                print(f"{label:<38} request thread {best_thread / n * 1e6:7.1f} us/task   "
                      f"process {best_process / n * 1e6:7.1f} us/task", flush=True)

            for host in ("127.0.0.1:9", "93.184.216.34", "localhost:9"):
                items = [{"topic": f"bench-{i % 4}", "callback": f"http://{host}/cb/{i}", "content": {"n": i},
                          "delay": 3600, "retry": 3} for i in range(n)]
                run(f"create_many x{n} ({host.split(':')[0]})", lambda: service.create_many(items))

                def singles() -> None:
                    for item in items:
                        service.create(item)

                run(f"create x{n} ({host.split(':')[0]})", singles)
        finally:
            getattr(logs, "shutdown", lambda: None)()
            server.stop()


if __name__ == "__main__":
    main()
