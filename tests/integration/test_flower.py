"""Flower and Celery's own tooling see httpqueue's workers and tasks."""
from __future__ import annotations

import subprocess
import sys
import typing as t

import pytest
import requests

from httpqueue.embedded import free_port
from httpqueue.states import Outcome
from httpqueue.store.records import TaskRecord
from httpqueue.worker.attempts import Result, message_report
from tests.support.processes import Proc, wait_until
from tests.support.receiver import Answer, Receiver

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


def flower_messages(flower: str, task_id: str, state: str | None = None) -> list[dict[str, t.Any]]:
    """Flower's messages (Celery tasks) that carried ``task_id``, in ``state`` if given."""
    tasks = requests.get(f"{flower}/api/tasks", params={"limit": 1000}, auth=AUTH, timeout=5).json()
    return [info for info in tasks.values()
            if task_id in str(info.get("args")) and (state is None or info.get("state") == state)]


def test_flower_lists_the_worker_and_the_delivered_tasks(flower: str, client: t.Any, receiver: Receiver,
                                                         topic: str) -> None:
    workers = wait_until(lambda: requests.get(f"{flower}/api/workers", auth=AUTH, timeout=5).json(), 30, "workers in flower")
    assert any(name.startswith("worker-main@") for name in workers)
    task_id = client.post("/create", json={"topic": topic, "delay": 0.2,
                                           "callback": receiver.url(f"/{topic}")}).get_json()["id"]
    receiver.wait_task(task_id)

    [info] = wait_until(lambda: flower_messages(flower, task_id, "SUCCESS"), 30, "the delivery message in flower")
    assert info["name"] == f"deliver {topic} x1" and topic in str(info.get("kwargs"))
    assert info["result"] == f"1 task: 1 succeeded ({task_id})"
    assert info["worker"].startswith("worker-main@") and info["runtime"] >= 0
    assert info.get("started") is None  # the pool's start is not the callbacks' start: not sent


def test_flower_shows_each_message_outcome_and_a_failed_callback_as_failure(
        flower: str, client: t.Any, receiver: Receiver, topic: str) -> None:
    """One message carries a success and a failed attempt (SUCCESS, both named); the retry fails for good."""
    ok_path, bad_path = f"/{topic}/ok", f"/{topic}/bad"
    receiver.default(bad_path, Answer(status=500, body="broken"))
    created = client.post("/v1/tasks/batch", json={"tasks": [
        {"topic": topic, "delay": 0.3, "retry": 0, "callback": receiver.url(ok_path)},
        {"topic": topic, "delay": 0.3, "retry": 1, "callback": receiver.url(bad_path)}]}).get_json()
    good, bad = (item["id"] for item in created["results"])

    [first] = wait_until(lambda: flower_messages(flower, good), 30, "the message of both tasks in flower")
    assert first["name"] == f"deliver {topic} x2" and bad in str(first["args"])
    first = wait_until(lambda: [m for m in flower_messages(flower, good) if m["state"] != "RECEIVED"], 30,
                       "the outcome of the first message")[0]
    assert first["state"] == "SUCCESS", first
    assert first["result"].startswith("2 tasks: 1 succeeded (" + good + "); 1 retrying: ")
    assert "500" in first["result"] and first["result"].endswith(f"({bad})")

    [last] = wait_until(lambda: flower_messages(flower, bad, "FAILURE"), 30, "the failed retry in flower")
    assert last["name"] == f"deliver {topic} x1" and last["uuid"] != first["uuid"]
    assert last["exception"].startswith("1 of 1 task failed for good: ") and last["exception"].endswith(f"({bad})")
    assert "500" in last["exception"] and last["result"].startswith("1 task: 1 failed: ")


def test_a_callback_that_fails_for_good_shows_its_message_as_failure(flower: str, client: t.Any,
                                                                      receiver: Receiver, topic: str) -> None:
    receiver.default(f"/{topic}", Answer(status=500, body="broken"))
    task_id = client.post("/create", json={"topic": topic, "delay": 0.2, "retry": 0,
                                           "callback": receiver.url(f"/{topic}")}).get_json()["id"]
    [info] = wait_until(lambda: flower_messages(flower, task_id, "FAILURE"), 30, "the failed message in flower")
    assert info["name"] == f"deliver {topic} x1"
    assert task_id in info["exception"] and "failed for good" in info["exception"] and "500" in info["exception"]
    assert client.get(f"/v1/tasks/{task_id}").get_json()["state"] == "failed"  # recorded before it was reported


def test_celery_inspect_pings_the_worker(env: dict[str, str], worker: t.Any) -> None:
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "httpqueue", "inspect", "ping", "--timeout", "5"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "worker-main@" in result.stdout and "pong" in result.stdout


def test_a_message_report_groups_tasks_by_outcome_and_error() -> None:
    """The result text Flower shows, for the outcomes a real worker rarely produces on cue (pure)."""
    def result(task_id: str, outcome: Outcome, error: str | None = None) -> Result:
        task = TaskRecord.from_hash(task_id, {"tp": "t", "cb": "http://127.0.0.1:9/", "ct": "null", "st": "delivering"})
        return Result(task, outcome, 0, 0, error=error)

    report = message_report(6, [result("a", Outcome.FAILED, "HTTP 500"), result("b", Outcome.SUCCEEDED),
                                result("c", Outcome.FAILED, "HTTP 500"), result("d", Outcome.FAILED, "gone")],
                            [True, True, True, False], stale=["e"], lost=["f"])
    assert report.text == ("6 tasks: 1 succeeded (b); 2 failed: HTTP 500 (a, c); 1 failed, not recorded (the task "
                           "had moved on: its lease ran out, or it was deleted): gone (d); 1 stale: already "
                           "attempted, deleted or re-issued (e); 1 lost: the attempt raised; re-issued when its "
                           "lease runs out (f)")
    assert report.failed and report.failures == "2 of 6 tasks failed for good: HTTP 500 (a, c)"
    quiet = message_report(2, [result("a", Outcome.DEFERRED, "rate limit")], [True], stale=["b"])
    assert not quiet.failed and quiet.text.startswith("2 tasks: 1 deferred: rate limit (a); 1 stale")
