"""The log lines of real processes: written by each process's listener thread, none lost or doubled at a clean stop.

An API (granian or gunicorn, two worker processes each) and a prefork Celery
worker of their own, on a Redis of their own: a single create logs its
``createTask`` line, a batch create one ``createTasks`` line, and each attempt
its ``result`` line in the pool child that made it; all of them are in the
output once the processes were stopped with SIGTERM.
"""
from __future__ import annotations

import json
import re
import typing as t

import pytest
import redis
import requests

from httpqueue.embedded import EmbeddedRedis, free_port
from tests.support.processes import settings_env, start_api, start_worker
from tests.support.receiver import Receiver
from tests.support.settings import TEST_SETTINGS


@pytest.fixture(scope="module")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[dict[str, str], redis.Redis]]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-logs"), port=free_port()).start()
    try:
        yield settings_env({**TEST_SETTINGS, "redis_url": server.url}), redis.Redis.from_url(server.url)
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("api_server", ["granian", "gunicorn"])
def test_every_create_and_attempt_line_is_written_once_by_the_processes_that_made_them(
        service_env: tuple[dict[str, str], redis.Redis], receiver: Receiver, topic: str, api_server: str) -> None:
    env, client = service_env
    worker = start_worker({**env, "HTTPQUEUE_WORKER_CONCURRENCY": "2"}, f"worker-logs-{api_server}", client)
    port = free_port()
    api = start_api(env, port, name=f"api-logs-{api_server}", workers=2, server=api_server)
    base, callback = f"http://127.0.0.1:{port}", receiver.url(f"/{topic}")
    try:
        singles = [requests.post(f"{base}/create", json={"topic": topic, "delay": 0.3, "callback": callback},
                                 timeout=5).json()["id"] for _ in range(6)]
        batch = requests.post(f"{base}/v1/tasks/batch", timeout=5, json={
            "tasks": [{"topic": topic, "delay": 0.3, "callback": callback} for _ in range(7)]}).json()["results"]
        batched = [item["id"] for item in batch]
        for task_id in singles + batched:
            receiver.wait_task(task_id)
    finally:
        api.stop()
        worker.stop()
    api_log, worker_log = api.output(), worker.output()
    for task_id in singles:
        lines = [line for line in api_log.splitlines() if f'"task_id":"{task_id}"' in line]
        assert len(lines) == 1 and " INFO createTask :{" in lines[0], lines
        fields = json.loads(lines[0].split("createTask :", 1)[1])
        assert fields["topic"] == topic and fields["callback"] == callback
    [batch_line] = [line for line in api_log.splitlines() if "createTasks :" in line and topic in line]
    summary = json.loads(batch_line.split("createTasks :", 1)[1])
    assert summary["count"] == 7 and summary["topics"] == {topic: 7} and summary["first_ids"] == batched[:5]
    assert not any(task_id in api_log for task_id in batched[5:])  # no per-task line at INFO
    for task_id in singles + batched:
        results = re.findall(rf"result : {re.escape(topic)}:{re.escape(task_id)} => ", worker_log)
        assert len(results) == 1, (task_id, worker_log[-3000:])
