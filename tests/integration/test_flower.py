"""Flower and Celery's own tooling see httpqueue's workers and tasks."""
from __future__ import annotations

import subprocess
import sys
import typing as t

import pytest
import requests

from httpqueue.embedded import free_port
from tests.support.processes import Proc, wait_until
from tests.support.receiver import Receiver

pytest.importorskip("flower")

AUTH = ("ops", "flower-test-pass")  # Flower's API needs authentication (or FLOWER_UNAUTHENTICATED_API)


@pytest.fixture(scope="module")
def flower(env: dict[str, str], worker: t.Any) -> t.Iterator[str]:
    port = free_port()
    proc = Proc([sys.executable, "-m", "celery", "-A", "httpqueue", "flower", f"--port={port}",
                 "--address=127.0.0.1", "--purge_offline_workers=60", f"--basic-auth={AUTH[0]}:{AUTH[1]}"],
                env, "flower")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: not proc.alive() or requests.get(f"{url}/healthcheck", timeout=1).ok, 30, "flower up")
        assert proc.alive(), proc.output()[-2000:]
        yield url
    finally:
        proc.stop()


def test_flower_lists_the_worker_and_the_delivered_tasks(flower: str, client: t.Any, receiver: Receiver,
                                                         topic: str) -> None:
    workers = wait_until(lambda: requests.get(f"{flower}/api/workers", auth=AUTH, timeout=5).json(), 30, "workers in flower")
    assert any(name.startswith("worker-main@") for name in workers)
    task_id = client.post("/create", json={"topic": topic, "delay": 0.2,
                                           "callback": receiver.url(f"/{topic}")}).get_json()["id"]
    receiver.wait_task(task_id)

    def seen() -> list[dict[str, t.Any]]:
        tasks = requests.get(f"{flower}/api/tasks", params={"limit": 500}, auth=AUTH, timeout=5).json()
        return [info for info in tasks.values() if task_id in str(info.get("args"))
                and info.get("state") == "SUCCESS"]

    [info] = wait_until(seen, 30, "the delivery task in flower")
    assert info["name"] == f"deliver {topic} x1" and topic in str(info.get("kwargs"))


def test_celery_inspect_pings_the_worker(env: dict[str, str], worker: t.Any) -> None:
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "httpqueue", "inspect", "ping", "--timeout", "5"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "worker-main@" in result.stdout and "pong" in result.stdout
