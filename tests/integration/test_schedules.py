"""Recurring schedules end to end: once per tick with two workers, pause, resume, delete, validation."""
from __future__ import annotations

import collections
import time
import typing as t

import pytest
import redis

from tests.support.processes import start_worker, wait_until
from tests.support.receiver import Receiver


@pytest.fixture(scope="module")
def two_workers(env: dict[str, str], rclient: redis.Redis, worker: t.Any) -> t.Iterator[None]:
    """The session worker plus one more: both run a scheduler thread."""
    extra = start_worker(env, "worker-schedules", rclient)
    yield
    extra.stop()


def ticks(receiver: Receiver, path: str) -> collections.Counter[str]:
    return collections.Counter(r.task_id for r in receiver.requests if r.path == path)


def test_each_tick_fires_once_with_two_workers(client: t.Any, receiver: Receiver, two_workers: None,
                                               topic: str) -> None:
    path = f"/{topic}"
    response = client.post("/v1/schedules", json={"id": topic, "cron": "* * * * * *", "task": {
        "topic": topic, "callback": receiver.url(path), "content": {"report": "tick"}}})
    assert response.status_code == 201, response.get_json()
    schedule = response.get_json()
    assert schedule["next_tick_ms"] > time.time() * 1000 - 1000
    receiver.wait_for(lambda reqs: len(ticks(receiver, path)) >= 4, timeout=20)
    assert client.delete(f"/v1/schedules/{topic}").status_code == 200
    seen = ticks(receiver, path)
    assert all(n == 1 for n in seen.values()), seen  # one callback per tick id
    tick_ms = sorted(int(task_id.split("@")[1]) for task_id in seen)
    assert all(ms % 1000 == 0 for ms in tick_ms)  # ticks on whole seconds, as the cron says
    for r in receiver.requests:
        if r.path == path:  # each fires at its tick, not before
            assert r.at * 1000 >= int(r.task_id.split("@")[1]) - 5
    assert client.get(f"/v1/schedules/{topic}").status_code == 404


def test_pause_stops_and_resume_restarts(client: t.Any, receiver: Receiver, two_workers: None, topic: str) -> None:
    path = f"/{topic}"
    client.post("/v1/schedules", json={"id": topic, "cron": "* * * * * *", "task": {
        "topic": topic, "callback": receiver.url(path)}})
    receiver.wait_for(lambda reqs: len(ticks(receiver, path)) >= 1, timeout=10)
    paused = client.post(f"/v1/schedules/{topic}/pause").get_json()
    assert paused["paused"] is True and paused["next_tick_ms"] is None
    paused_at = time.time()
    wait_until(lambda: time.time() > paused_at + 3.0, 5, "three ticks' worth of time")
    # tasks created before the pause (at most the lead time ahead) may still arrive; nothing later
    late = [r for r in receiver.requests if r.path == path and int(r.task_id.split("@")[1]) > (paused_at + 1.6) * 1000]
    assert late == []
    resumed = client.post(f"/v1/schedules/{topic}/resume").get_json()
    assert resumed["paused"] is False and resumed["next_tick_ms"] > paused_at * 1000
    count = len(ticks(receiver, path))
    receiver.wait_for(lambda reqs: len(ticks(receiver, path)) > count, timeout=10)
    listed = [s["id"] for s in client.get("/v1/schedules").get_json()["schedules"]]
    assert topic in listed
    client.delete(f"/v1/schedules/{topic}")


@pytest.mark.parametrize("body, field", [
    ({"cron": "61 * * * *"}, "cron"), ({"cron": "every day"}, "cron"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"task": {"topic": "x", "callback": "ftp://x/"}}, "task"),
    ({"task": {"topic": "x", "callback": "http://127.0.0.1:9/", "delay": 5}}, "task"),
    ({"task": {"topic": "x", "callback": "http://10.0.0.1/"}}, "task"),
    ({"id": "bad id"}, "id"), ({"extra": 1}, "extra"),
])
def test_invalid_schedules_are_400(client: t.Any, body: dict[str, t.Any], field: str) -> None:
    base = {"cron": "0 9 * * *", "timezone": "Europe/Berlin", "task": {"topic": "x", "callback": "http://127.0.0.1:9/"}}
    response = client.post("/v1/schedules", json={**base, **body})
    assert response.status_code == 400, response.get_json()
    assert field in response.get_json()["fields"]


def test_unknown_schedule_is_404(client: t.Any) -> None:
    for method, path in (("get", "/v1/schedules/nope"), ("delete", "/v1/schedules/nope"),
                         ("post", "/v1/schedules/nope/pause")):
        assert getattr(client, method)(path).status_code == 404
