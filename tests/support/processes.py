"""Real httpqueue processes for tests: Celery workers and API servers (granian or gunicorn).

Started with ``python -m httpqueue ...`` and the test's ``HTTPQUEUE_*``
environment, waited for by polling (heartbeat key, /health) with deadlines.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import redis
import requests

from httpqueue.store.keys import Keys

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def settings_env(overrides: t.Mapping[str, t.Any]) -> dict[str, str]:
    """``HTTPQUEUE_*`` variables for a child process, on top of this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPQUEUE_")}
    for name, value in overrides.items():
        env[f"HTTPQUEUE_{name.upper()}"] = ",".join(value) if isinstance(value, (tuple, list)) else str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(predicate: t.Callable[[], t.Any], timeout: float, what: str, interval: float = 0.05) -> t.Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # the thing polled may not be up yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A child process whose output goes to a log file under test-artifacts/."""

    def __init__(self, argv: list[str], env: dict[str, str], name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}.log"
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole process group (a prefork parent and its children)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def dump_stacks(self) -> Path:
        """``py-spy dump`` of this process and its children (a prefork worker's pool) into test-artifacts/.

        For a test that sees a worker do nothing: where its processes wait is the first thing to know.
        """
        import psutil

        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out = ARTIFACTS / f"{self.name}-stacks.txt"
        with open(out, "w") as dump:
            try:
                parent = psutil.Process(self.pid)
                processes = [parent, *parent.children(recursive=True)]
            except psutil.Error as exc:
                dump.write(f"{exc!r}\n")
                return out
            for process in processes:
                done = subprocess.run([py_spy, "dump", "--pid", str(process.pid)], capture_output=True, text=True,
                                      timeout=60, check=False)
                dump.write(f"== pid {process.pid}\n{done.stdout}{done.stderr}\n")
        return out


def start_worker(env: dict[str, str], name: str, redis_client: redis.Redis, prefix: str = "hq",
                 extra: t.Sequence[str] = (), timeout: float = 30) -> Proc:
    """A Celery worker with the promoter; returns once its promoter's heartbeat is in Redis.

    ``prefix`` is the worker's ``key_prefix`` (where its heartbeat is written).
    """
    hostname = f"{name}@localhost"
    heartbeat = Keys(prefix).worker_heartbeat(hostname)
    proc = Proc([sys.executable, "-m", "httpqueue", "worker", "-n", hostname, "--without-mingle",
                 "--without-gossip", *extra], env, name)
    wait_until(lambda: not proc.alive() or redis_client.exists(heartbeat), timeout, f"worker {name} heartbeat")
    if not proc.alive():
        raise AssertionError(f"worker {name} exited:\n{proc.output()[-3000:]}")
    return proc


def start_api(env: dict[str, str], port: int, name: str = "api", workers: int = 1, timeout: float = 30,
              server: str | None = None) -> Proc:
    """``httpqueue api`` on ``port``; returns once it answers /health.

    ``server`` is ``--server`` (granian or gunicorn); ``None`` leaves the choice
    to the environment and httpqueue's default.
    """
    proc = Proc([sys.executable, "-m", "httpqueue", "api", "--address", f"127.0.0.1:{port}",
                 "--workers", str(workers), *(["--server", server] if server else [])], env, name)
    wait_until(lambda: not proc.alive() or requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok,
               timeout, f"api {name} on port {port}")
    if not proc.alive():
        raise AssertionError(f"api {name} exited:\n{proc.output()[-3000:]}")
    return proc
