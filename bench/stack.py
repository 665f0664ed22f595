"""The processes a benchmark runs against, all on loopback and all started here.

A :class:`Stack` is one fresh set: its own ``redis-server`` on a free port in a
temporary directory (never a shared Redis), the callback receiver, and either
httpqueue (``httpqueue api`` = its default server and worker count, plus
``httpqueue worker`` processes) or the plain-Celery baseline worker, or several
API servers side by side (:meth:`Stack.start_api`, the intake scenario). Every child
gets ``HTTPQUEUE_REDIS_URL`` explicitly. Scenarios get a fresh stack each, so
one scenario's tasks never weigh on the next.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import psutil
import redis
import requests

from bench.receiver import ReceiverClient
from httpqueue.embedded import EmbeddedRedis, free_port

BENCH_SETTINGS: dict[str, str] = {
    # Callbacks go to the loopback receiver, which the SSRF guard refuses unless allowed.
    "callback_allow": "127.0.0.0/8",
    # Short horizon: the lateness scenario's 1-5 s delays then take both paths
    # (published at create, and parked then promoted); delivery's 5 s lead goes through the timer.
    "timer_horizon": "3",
}
"""httpqueue settings of every benchmark run (the rest are the defaults)."""

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate: t.Callable[[], t.Any], timeout: float, what: str, interval: float = 0.05) -> t.Any:
    """Poll until ``predicate`` returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # the thing polled may not be up yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Child:
    """A child process in its own session, its output in a log file of the stack's directory."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss(self) -> int:
        """Resident memory of the process and all its descendants, in bytes."""
        parent = psutil.Process(self.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])

    def tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


class Stack:
    """Redis + receiver (+ httpqueue or the Celery baseline), torn down on exit."""

    def __init__(self, hq_workers: int = 1, hq_pool: str = "prefork", hq_concurrency: int = 0,
                 keep_dir: bool = False) -> None:
        self.hq_workers = hq_workers
        self.hq_pool = hq_pool
        self.hq_concurrency = hq_concurrency
        self.dir = Path(tempfile.mkdtemp(prefix="httpqueue-bench-"))
        self.keep_dir = keep_dir
        self.redis_server = EmbeddedRedis(self.dir / "redis", port=free_port(), appendonly=False)
        self.children: dict[str, Child] = {}
        self.receiver_port = free_port()
        self.api_port = free_port()
        self.receiver = ReceiverClient(self.receiver_port)

    # -- environment

    @property
    def redis_url(self) -> str:
        return self.redis_server.url  # redis://127.0.0.1:<port>/0

    def baseline_broker_url(self) -> str:
        """The plain-Celery baseline uses the same Redis, another database."""
        return f"redis://127.0.0.1:{self.redis_server.port}/2"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPQUEUE_")}
        env.update({f"HTTPQUEUE_{k.upper()}": v for k, v in BENCH_SETTINGS.items()})
        env["HTTPQUEUE_REDIS_URL"] = self.redis_url
        env["HTTPQUEUE_WORKER_POOL"] = self.hq_pool
        env["HTTPQUEUE_WORKER_CONCURRENCY"] = str(self.hq_concurrency)
        env["BENCH_BROKER_URL"] = self.baseline_broker_url()
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.redis_server.port, db=db, decode_responses=True)

    def api_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    # -- starting things

    def start_base(self) -> Stack:
        """Redis and the receiver."""
        self.redis_server.start()
        self._spawn("receiver", [sys.executable, "-m", "bench.receiver", "--port", str(self.receiver_port)])
        wait_until(self.receiver.stats, 15, "the receiver")
        return self

    def start_api(self, name: str, argv: list[str]) -> str:
        """One more API server (``argv`` gets ``--address 127.0.0.1:<free port>``); returns its base URL."""
        port = free_port()
        self._spawn(name, [*argv, "--address", f"127.0.0.1:{port}"])
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            return requests.get(base + "/health", timeout=1).ok

        self._wait_alive(name, answers, "/health")
        return base

    def pids(self, name: str) -> list[int]:
        """The process of child ``name`` and its descendants (an API's master first, then its workers)."""
        parent = psutil.Process(self.children[name].pid)
        return [parent.pid, *(p.pid for p in parent.children(recursive=True))]

    def cpu_seconds(self, name: str) -> float:
        """CPU time (user + system) used so far by child ``name`` and its live descendants."""
        total = 0.0
        for pid in self.pids(name):
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def start_httpqueue(self) -> Stack:
        """``httpqueue api`` (its default server and worker count for this machine) and the delivery worker(s)."""
        self._spawn("api", [sys.executable, "-m", "httpqueue", "api", "--address", f"127.0.0.1:{self.api_port}"])
        self.start_workers()
        self._wait_alive("api", lambda: requests.get(self.api_url("/ready"), timeout=1).ok, "/ready")
        return self

    def start_workers(self) -> Stack:
        """The delivery worker(s) alone, each waited for until its heartbeat is in Redis."""
        for n in range(self.hq_workers):
            name = f"worker{n}"
            self._spawn(name, [sys.executable, "-m", "httpqueue", "worker", "-n", f"{name}@bench",
                               "--without-mingle", "--without-gossip"])
        client = self.client()
        for n in range(self.hq_workers):
            key = f"hq:worker:worker{n}@bench"
            self._wait_alive(f"worker{n}", lambda: client.exists(key), "heartbeat")
        return self

    def start_baseline(self, concurrency: int) -> Stack:
        """The plain Celery worker: prefork pool, ``concurrency`` processes."""
        self._spawn("baseline", [sys.executable, "-m", "celery", "-A", "bench.baseline", "worker",
                                 "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "WARNING",
                                 "-n", "baseline@bench", "--without-mingle", "--without-gossip"])
        from bench.baseline import configure

        app = configure(self.baseline_broker_url())
        self._wait_alive("baseline", lambda: app.control.inspect(timeout=0.5).ping(), "ping")
        return self

    def spawn(self, name: str, argv: list[str]) -> Child:
        """Start ``argv`` as child ``name`` with the bench's environment (stopped with the stack)."""
        return self._spawn(name, argv)

    def _spawn(self, name: str, argv: list[str]) -> Child:
        child = Child(argv, self.env(), self.dir / f"{name}.log")
        self.children[name] = child
        return child

    def _wait_alive(self, name: str, ready: t.Callable[[], t.Any], what: str) -> None:
        child = self.children[name]
        wait_until(lambda: not child.alive() or ready(), 60, f"{name} {what}")
        if not child.alive():
            raise RuntimeError(f"{name} exited:\n{child.tail()}")

    def worker_rss(self, prefix: str = "worker") -> int:
        return sum(c.rss() for name, c in self.children.items() if name.startswith(prefix))

    def stop(self) -> None:
        for name in sorted(self.children, key=lambda n: n != "api"):  # API first: no new work
            self.children[name].stop()
        self.redis_server.stop()
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
