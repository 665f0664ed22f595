"""Prometheus metrics: counters from events, gauges from Redis, summed across processes."""
from __future__ import annotations

import logging
import re
import typing as t

import pytest
import redis
import requests

from httpqueue import events
from httpqueue.embedded import EmbeddedRedis, free_port
from tests.support.processes import settings_env, start_api, start_worker, wait_until
from tests.support.receiver import Receiver
from tests.support.settings import TEST_SETTINGS


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return None


def test_metrics_show_counts_from_redis_and_this_process(client: t.Any, topic: str) -> None:
    for _ in range(3):
        client.post("/create", json={"topic": topic, "delay": 3600, "callback": "http://127.0.0.1:9/"})
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert sample(text, "httpqueue_tasks", state="scheduled", topic=topic) == 3
    assert sample(text, "httpqueue_tasks_created_total", topic=topic) == 3
    assert sample(text, "httpqueue_promoter_lag_seconds") is not None
    assert "# TYPE httpqueue_firing_lateness_seconds histogram" in text


def test_a_batch_create_is_one_event_counted_per_topic_and_one_log_record(client: t.Any, topic: str,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, dict[str, t.Any]]] = []

    def listener(name: str, fields: t.Mapping[str, t.Any]) -> None:
        if name.startswith("create"):
            seen.append((name, dict(fields)))

    other = f"{topic}-b"
    tasks = [{"topic": topic if n < 3 else other, "delay": 3600, "callback": f"http://127.0.0.1:9/{n}"}
             for n in range(5)]
    tasks.insert(2, {"topic": topic, "delay": 3600, "callback": "http://169.254.169.254/"})  # refused
    events.subscribe(listener)
    try:
        caplog.set_level(logging.INFO, logger="httpqueue")
        results = client.post("/v1/tasks/batch", json={"tasks": tasks}).get_json()["results"]
        caplog.set_level(logging.DEBUG, logger="httpqueue")
        client.post("/v1/tasks/batch", json={"tasks": tasks[:2]})
    finally:
        events.unsubscribe(listener)
    ids = [r["id"] for r in results if "id" in r]
    assert len(ids) == 5 and "error" in results[2]
    assert seen == [
        ("create_batch", {"count": 5, "topics": {topic: 3, other: 2}, "first_ids": ids, "refused": 1}),
        ("create_batch", {"count": 2, "topics": {topic: 2}, "first_ids": seen[1][1]["first_ids"]}),
    ]
    created = [r for r in caplog.records if getattr(r, "event", "").startswith("create")]
    # INFO: one record for the batch; DEBUG: the batch's and one per task, each the single create's record
    assert [(r.event, r.levelno) for r in created] == [  # type: ignore[attr-defined]
        ("create_batch", logging.INFO), ("create", logging.DEBUG), ("create", logging.DEBUG),
        ("create_batch", logging.INFO)]
    per_task = created[1].fields  # type: ignore[attr-defined]
    assert set(per_task) == {"task_id", "topic", "due_ms", "max_retry", "callback"}
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "httpqueue_tasks_created_total", topic=topic) == 5
    assert sample(text, "httpqueue_tasks_created_total", topic=other) == 2


@pytest.fixture
def stack(tmp_path: t.Any, receiver: Receiver) -> t.Iterator[dict[str, t.Any]]:
    """A service of its own (Redis, gunicorn API with 2 workers, a prefork worker) sharing one metrics dir."""
    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    metrics_port, api_port = free_port(), free_port()
    env = settings_env({**TEST_SETTINGS, "redis_url": server.url, "worker_metrics_port": metrics_port})
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    client = redis.Redis.from_url(server.url)
    worker = start_worker(env, "worker-metrics", client)
    api = start_api(env, api_port, name="api-metrics", workers=2)
    try:
        yield {"api": f"http://127.0.0.1:{api_port}", "worker_metrics": f"http://127.0.0.1:{metrics_port}"}
    finally:
        api.stop()
        worker.stop()
        server.stop()


def test_api_and_worker_metrics_are_summed_across_processes(stack: dict[str, t.Any], receiver: Receiver,
                                                             topic: str) -> None:
    api = stack["api"]
    ids = [requests.post(f"{api}/create", json={"topic": topic, "delay": 0.2, "callback": receiver.url(f"/{topic}")},
                         timeout=5).json()["id"] for _ in range(4)]
    for task_id in ids:
        receiver.wait_task(task_id)

    def delivered(url: str) -> float | None:
        return sample(requests.get(f"{url}/metrics", timeout=5).text, "httpqueue_tasks_delivered_total", topic=topic)

    # the API's /metrics sums its gunicorn workers and the worker's pool processes (same host, same dir)
    wait_until(lambda: delivered(api) == 4, 15, "4 deliveries counted on the API's /metrics")
    text = requests.get(f"{api}/metrics", timeout=5).text
    assert sample(text, "httpqueue_tasks_created_total", topic=topic) == 4
    assert sample(text, "httpqueue_firing_lateness_seconds_count", topic=topic) == 4
    assert sample(text, "httpqueue_receiver_responses_total", topic=topic, code="100") == 4
    wait_until(lambda: sample(requests.get(f"{api}/metrics", timeout=5).text, "httpqueue_tasks",
                              state="succeeded", topic=topic) == 4, 10, "succeeded gauge")
    assert delivered(stack["worker_metrics"]) == 4  # the worker's own endpoint
    ready = requests.get(f"{api}/ready", timeout=5)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
