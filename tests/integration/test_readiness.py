"""Readiness tells the truth: no worker, no persistence, an open API, and when ``httpqueue run`` is listening.

Each scenario runs its own Redis (the session's worker must not count as
alive here) and real API, worker and ``httpqueue run`` processes.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import pytest
import redis
import requests

from httpqueue import cli, health
from httpqueue.config import LOOPBACK_DEFAULT_ADDRESS, Settings
from httpqueue.connections import redis_client
from httpqueue.embedded import EmbeddedRedis, free_port
from httpqueue.store.keys import Keys
from tests.support.processes import ARTIFACTS, Proc, settings_env, start_api, start_worker, wait_until
from tests.support.receiver import Receiver

FAST: dict[str, t.Any] = {
    "callback_allow": ("127.0.0.0/8", "::1"), "timer_horizon": 2.0, "promoter_interval": 0.05, "lease": 4.0,
    "callback_timeout": 2.0, "visibility_timeout": 60, "shards": 4, "worker_concurrency": 2, "retry_base": 1,
}
"""Short timings, as the suite's, for a service of this module's own."""


@dataclasses.dataclass
class Service:
    """An API on a Redis of its own, and no worker unless a test starts one."""

    url: str
    env: dict[str, str]
    redis: redis.Redis
    api: Proc


@pytest.fixture
def service_on(tmp_path: Path) -> t.Iterator[t.Callable[..., Service]]:
    """Factory: ``service_on(appendonly=True)`` starts a Redis and a gunicorn API on it (no worker)."""
    started: list[tuple[Proc, EmbeddedRedis]] = []

    def start(appendonly: bool = True) -> Service:
        server = EmbeddedRedis(tmp_path / f"redis-{len(started)}", port=free_port(), appendonly=appendonly).start()
        env = settings_env({**FAST, "redis_url": server.url})
        port = free_port()
        api = start_api(env, port, name=f"api-readiness-{len(started)}")
        started.append((api, server))
        return Service(f"http://127.0.0.1:{port}", env, redis.Redis.from_url(server.url, decode_responses=True), api)

    yield start
    for api, server in started:
        api.stop()
        server.stop()


def metric(base: str, name: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_without_a_worker_ready_fails_creates_warn_and_the_lag_grows(service_on: t.Callable[..., Service],
                                                                     receiver: Receiver, topic: str) -> None:
    svc = service_on()
    base, hook = svc.url, receiver.url(f"/{topic}")

    ready = requests.get(f"{base}/ready", timeout=5)
    assert ready.status_code == 503, ready.text
    assert ready.json()["problems"] == [health.NO_WORKER] and ready.json()["workers"] == 0
    assert "no worker is running" in ready.json()["error"]

    # every create path stores the task, and says that nothing will fire it yet
    soon = requests.post(f"{base}/create", json={"topic": topic, "delay": 0.2, "callback": hook}, timeout=5)
    past = requests.post(f"{base}/v1/tasks", json={"topic": topic, "execute_at": time.time() - 5, "callback": hook},
                         timeout=5)
    batch = requests.post(f"{base}/v1/tasks/batch", json={"tasks": [{"topic": topic, "delay": 1.0, "callback": hook}]},
                          timeout=5)
    for answer in (soon, past, batch):
        assert answer.status_code in (200, 201), answer.text
        assert answer.headers.get("Warning") == health.NO_WORKER_WARNING
    assert requests.get(f"{base}/v1/stats", timeout=5).headers.get("Warning") is None  # creates only

    # overdue: queued in flight but never claimed (soon, past) and parked in the timer, never promoted (batch)
    status = wait_until(lambda: (s := requests.get(f"{base}/status", timeout=5).json())["overdue"]["tasks"] == 3
                        and s, 10, "three overdue tasks")
    assert status["ready"] is False and status["workers"] == 0 and status["problems"] == [health.NO_WORKER]
    dues = [requests.get(f"{base}/v1/tasks/{i}", timeout=5).json()["next_attempt_ms"]
            for i in (soon.json()["id"], past.json()["id"])]  # a time in the past is due at its create
    assert status["overdue"]["oldest_due_ms"] == min(dues)
    assert metric(base, "httpqueue_promoter_lag_seconds") >= status["overdue"]["oldest_seconds"] > 0
    wait_until(lambda: metric(base, "httpqueue_promoter_lag_seconds") >= 1.5, 5, "the lag grows", interval=0.2)
    assert metric(base, "httpqueue_tasks_overdue") == 3
    assert metric(base, "httpqueue_workers") == 0

    # a worker comes: everything overdue fires, /ready turns, the header goes (its cache lives ~1 s)
    worker = start_worker(svc.env, "worker-readiness", svc.redis)
    try:
        ids = [soon.json()["id"], past.json()["id"], batch.json()["results"][0]["id"]]
        for task_id in ids:
            receiver.wait_task(task_id, timeout=15)
        ready = requests.get(f"{base}/ready", timeout=5)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        wait_until(lambda: "Warning" not in requests.post(
            f"{base}/create", json={"topic": topic, "delay": 3600, "callback": hook}, timeout=5).headers,
            5, "no Warning header with a worker", interval=0.2)
        wait_until(lambda: metric(base, "httpqueue_tasks_overdue") == 0, 10, "nothing overdue")
        assert metric(base, "httpqueue_promoter_lag_seconds") < 1.0
        assert metric(base, "httpqueue_workers") == 1
    finally:
        worker.stop()
    # a worker that stops cleanly withdraws its heartbeat: not ready at once, not after its expiry
    assert requests.get(f"{base}/ready", timeout=5).status_code == 503


def test_a_redis_without_persistence_is_reported_at_start_and_by_ready(service_on: t.Callable[..., Service]) -> None:
    svc = service_on(appendonly=False)  # EmbeddedRedis passes --appendonly no --save ""
    assert health.persistence(svc.redis) == "none"
    assert health.NO_PERSISTENCE in svc.api.output()
    ready = requests.get(f"{svc.url}/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["warnings"] == [health.NO_PERSISTENCE]

    worker = start_worker(svc.env, "worker-nopersist", svc.redis)
    try:
        assert health.NO_PERSISTENCE in worker.output()
        ready = requests.get(f"{svc.url}/ready", timeout=5)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "warnings": [health.NO_PERSISTENCE]}
        assert requests.get(f"{svc.url}/status", timeout=5).json()["persistence"] == "none"
    finally:
        worker.stop()


class NoConfigRedis(EmbeddedRedis):
    """A Redis that refuses CONFIG, as managed services do."""

    def command(self) -> list[str]:
        return [*super().command(), "--rename-command", "CONFIG", ""]


@pytest.mark.parametrize(("appendonly", "expected"), [(True, "aof"), (False, "unknown")])
def test_persistence_without_config_is_aof_or_unknown_never_an_error(tmp_path: Path, appendonly: bool,
                                                                     expected: str) -> None:
    with NoConfigRedis(tmp_path / "r", port=free_port(), appendonly=appendonly) as server:
        client = redis.Redis.from_url(server.url)
        with pytest.raises(redis.ResponseError):
            client.config_get("save")
        assert health.persistence(client) == expected
        assert health.check(client, Keys("hq")).warnings == ()  # "unknown" raises no alarm
        assert health.persistence_warning(client) is None


def test_persistence_of_an_unreachable_redis_is_not_a_start_failure() -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0")  # the client the commands use
    started = time.monotonic()
    assert health.persistence_warning(client) is None
    assert time.monotonic() - started < 3


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize(("address", "tokens", "warned"), [
    (":2356", (), True), ("0.0.0.0:2356", (), True), ("10.1.2.3:80", (), True), ("[::]:2356", (), True),
    ("example.com:80", (), True), (":2356", ("secret",), False), ("127.0.0.1:2356", (), False),
    ("localhost:2356", (), False), ("[::1]:2356", (), False), ("unix:/tmp/hq.sock", (), False),
])
def test_an_api_beyond_loopback_without_tokens_is_warned_about(redis_server: EmbeddedRedis, address: str,
                                                               tokens: tuple[str, ...], warned: bool) -> None:
    settings = Settings.load({"address": address, "api_tokens": tokens, "redis_url": redis_server.url,
                              "callback_allow": "127.0.0.0/8"}, environ={})
    records = Records()
    logging.getLogger("httpqueue").addHandler(records)
    try:
        cli.warn_at_start(settings, listening=True)
    finally:
        logging.getLogger("httpqueue").removeHandler(records)
    exposure = [m for m in records.messages if "beyond loopback" in m]
    assert bool(exposure) == warned, records.messages
    if warned:
        assert "HTTPQUEUE_API_TOKENS" in exposure[0] and "127.0.0.0/8" in exposure[0]
    assert health.NO_PERSISTENCE not in records.messages  # the suite's Redis appends


def test_run_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    assert cli.run_address(None, environ={}) == LOOPBACK_DEFAULT_ADDRESS == "127.0.0.1:2356"
    assert cli.run_address(":2356", environ={}) == ":2356"  # --address or HTTPQUEUE_ADDRESS (click reads both)
    config = tmp_path / "httpqueue.toml"
    config.write_text('address = "0.0.0.0:9000"\n')
    assert cli.run_address(None, environ={"HTTPQUEUE_CONFIG": str(config)}) is None  # the file's choice stands
    assert Settings.load(environ={}).address == ":2356"  # `httpqueue api` keeps the original Go default


class Output:
    """The merged output of a process, line by line with arrival times, read by a thread."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.lines: list[tuple[float, str]] = []
        self.log = log
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with open(self.log, "ab") as log:
            for raw in process.stdout:
                log.write(raw)
                log.flush()
                self.lines.append((time.time(), raw.decode(errors="replace").rstrip()))

    def find(self, text: str) -> tuple[float, str] | None:
        return next((line for line in list(self.lines) if text in line[1]), None)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@pytest.fixture
def run_command() -> t.Iterator[t.Callable[..., tuple[subprocess.Popen[bytes], Output]]]:
    """Factory: ``httpqueue run`` with a fresh data dir (short path: a unix socket lives there) and settings."""
    started: list[subprocess.Popen[bytes]] = []
    ARTIFACTS.mkdir(exist_ok=True)

    def start(*args: str, **settings: t.Any) -> tuple[subprocess.Popen[bytes], Output]:
        data = tempfile.mkdtemp(prefix="hq-run-")
        env = settings_env({"data_dir": data, **settings})
        process = subprocess.Popen([sys.executable, "-m", "httpqueue", "run", *args], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process, Output(process, ARTIFACTS / f"run-{Path(data).name}.log")

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_run_says_listening_only_when_a_task_created_then_fires_on_time(
        run_command: t.Callable[..., tuple[subprocess.Popen[bytes], Output]], receiver: Receiver,
        topic: str) -> None:
    port = free_port()
    process, output = run_command(address=f"127.0.0.1:{port}", callback_allow="127.0.0.0/8")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: output.find("httpqueue listening on") or process.poll() is not None, 120,
               "the 'listening' line", interval=0.02)
    found = output.find("httpqueue listening on")
    assert found, output.text()[-3000:]
    line = found[1]
    assert line.endswith(f"httpqueue listening on 127.0.0.1:{port}")
    created = requests.post(f"{base}/v1/tasks", json={"topic": topic, "delay": 1.0,
                                                      "callback": receiver.url(f"/{topic}")}, timeout=5)
    assert created.status_code == 201 and "Warning" not in created.headers, created.headers
    assert requests.get(f"{base}/ready", timeout=5).json() == {"status": "ready"}
    got = receiver.wait_task(created.json()["id"], timeout=10)[0]
    late = got.at - int(got.headers["X-Httpqueue-Due"]) / 1000
    assert -0.05 < late < 0.2, f"fired {late:.3f} s after its due time"
    assert "beyond loopback" not in output.text() and health.NO_PERSISTENCE not in output.text()

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/health", timeout=2)


def test_run_gives_up_clearly_when_the_worker_never_comes_up(
        run_command: t.Callable[..., tuple[subprocess.Popen[bytes], Output]]) -> None:
    """A broker nobody listens on: the API answers, the worker keeps reconnecting and never consumes."""
    port = free_port()
    process, output = run_command("--ready-timeout", "8", address=f"127.0.0.1:{port}",
                                  broker_url=f"redis://127.0.0.1:{free_port()}/0")
    assert process.wait(timeout=90) == 1, output.text()[-3000:]
    wait_until(lambda: output.find("httpqueue run:"), 5, "the error line")
    assert output.find("the worker did not report in within 8 s"), output.text()[-3000:]
    assert not output.find("httpqueue listening on")
    assert not output.find("the API did not answer")


def test_ready_names_the_broker_when_the_broker_is_away(redis_server: EmbeddedRedis) -> None:
    """A broker outage is reported as such (not as "Redis is unavailable"), with a 503 and Retry-After."""
    from celery import Celery

    from httpqueue.api import create_app
    from httpqueue.api.ops import BROKER_KEY

    app = create_app(Settings.load({"redis_url": redis_server.url}, environ={}))
    # this app's readiness checks a broker where nothing listens (the process's Celery app stays untouched)
    app.extensions[BROKER_KEY] = Celery("away", broker=f"redis://127.0.0.1:{free_port()}/0")
    answer = app.test_client().get("/ready")
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert "Celery broker is unavailable" in answer.get_json()["error"]
