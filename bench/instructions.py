"""Instructions per create request, httpqueue's app against the floor app, in-process (load independent).

``python -m bench.instructions [--paths /create,/v1/tasks,/v1/tasks/batch] [--no-floor]``

The shared machine's speed varies severalfold between days; instruction
counts do not. Each app is called as WSGI in-process (no server, no network
client), ``n`` requests after a warm-up, under ``valgrind --tool=callgrind``;
the count of a few requests is subtracted from that of many, so start-up and
imports cancel out, and the difference over the extra requests is the cost of
one request (Redis runs in its own process and is not counted). Needs ``valgrind``.
Prints one JSON line: instructions per request for the floor's ``/create``
and httpqueue's paths, and their ratios; for ``/v1/tasks/batch`` (a body of
:data:`BATCH_SIZE` tasks) also the instructions per task.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = {"topic": "bench", "delay": 3600, "callback": "http://127.0.0.1:9/cb", "content": {"n": 1}, "retry": 0}
BATCH_SIZE = 1000
BATCH_PATH = "/v1/tasks/batch"


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one path is measured: its body, the warm-up, and the two request counts whose difference is timed."""

    body: bytes
    warm_up: int
    few: int
    many: int
    tasks: int = 1


def plan(path: str) -> Plan:
    if path == BATCH_PATH:  # 1,000 tasks a request: fewer requests, the same order of instructions as 300 creates
        tasks = [{**TASK, "content": {"n": n}} for n in range(BATCH_SIZE)]
        return Plan(json.dumps({"tasks": tasks}).encode(), warm_up=3, few=2, many=8, tasks=BATCH_SIZE)
    return Plan(json.dumps(TASK).encode(), warm_up=50, few=100, many=400)


def serve_requests(app_name: str, path: str, n: int) -> None:
    """The measured program: the warm-up and ``n`` requests to ``path`` of the floor or httpqueue's app."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp())
    os.environ.setdefault("HTTPQUEUE_CALLBACK_ALLOW", "127.0.0.0/8")
    from httpqueue import logs
    from httpqueue.config import Settings

    logs.configure("text", logging.INFO)
    if app_name == "floor":
        from bench.floor import application
        app = application()
    else:
        from httpqueue.api import create_app
        app = create_app(Settings.load())

    def start(status: str, headers: t.Any, exc: t.Any = None) -> None:
        assert status.startswith(("200", "201")), status

    body = plan(path).body
    for _ in range(plan(path).warm_up + n):
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "2356",
                   "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": "application/json", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.errors": sys.stderr,
                   "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:2356"}
        b"".join(app(environ, start))


def instructions(app_name: str, path: str, n: int, env: dict[str, str]) -> int:
    run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          "-m", "bench.instructions", "--serve", app_name, path, str(n)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if not found:
        raise RuntimeError(f"callgrind printed no count:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def per_request(app_name: str, path: str, env: dict[str, str]) -> int:
    p = plan(path)
    return (instructions(app_name, path, p.many, env) - instructions(app_name, path, p.few, env)) // (p.many - p.few)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", default="/create,/v1/tasks")
    parser.add_argument("--no-floor", action="store_true", help="measure httpqueue's paths only")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_requests(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    from httpqueue.embedded import EmbeddedRedis, free_port

    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedRedis(Path(folder), port=free_port(), appendonly=False).start()
        try:
            env = {**os.environ, "HTTPQUEUE_REDIS_URL": server.url, "PYTHONPATH": str(ROOT)}
            floor = None if args.no_floor else per_request("floor", "/create", env)
            ours = {path: per_request("httpqueue", path, env) for path in args.paths.split(",")}
        finally:
            server.stop()
    report: dict[str, t.Any] = {"scenario": "instructions", "floor_create": floor, "httpqueue": ours}
    if floor is not None:
        report["floor_vs"] = {path: round(floor / count, 3) for path, count in ours.items() if path != BATCH_PATH}
    if BATCH_PATH in ours:
        report["batch_per_task"] = ours[BATCH_PATH] // BATCH_SIZE
    print(json.dumps(report))


if __name__ == "__main__":
    main()
