"""End to end: the Flask app creates, a real Celery worker delivers to a real receiver."""
from __future__ import annotations

import time
import typing as t

import pytest

from tests.support.api import SEED, create, events, query, wait_state
from tests.support.processes import wait_until
from tests.support.receiver import Answer, Receiver

pytestmark = pytest.mark.usefixtures("worker")


def test_callback_arrives_after_its_delay_with_the_seed_body(client: t.Any, receiver: Receiver, topic: str) -> None:
    before = time.time()
    task_id = create(client, topic, receiver.url("/ok"), url=SEED, delay=0.5, content={"order": 7})
    [request] = receiver.wait_task(task_id)
    assert request.at >= before + 0.5
    assert request.json == {"id": task_id, "topic": topic, "content": {"order": 7}}
    assert request.headers["X-Httpqueue-Attempt"] == "1"
    assert request.headers["Content-Type"] == "application/json"
    task = wait_state(client, task_id, "succeeded")
    assert task["attempts"] == 1 and task["has_retry"] == 0 and task["last_code"] == 100


def test_parked_task_beyond_the_horizon_fires_once_on_time(client: t.Any, receiver: Receiver, topic: str,
                                                          settings: t.Any) -> None:
    delay = settings.timer_horizon + 1.0
    task_id = create(client, topic, receiver.url("/ok"), url=SEED, delay=delay)
    assert query(client, task_id)["state"] == "scheduled"
    due = query(client, task_id)["execute_time_ms"] / 1000
    [request] = receiver.wait_task(task_id, timeout=delay + 10)
    assert due <= request.at < due + 0.5
    wait_state(client, task_id, "succeeded")
    assert len(receiver.for_task(task_id)) == 1


def test_retry_schedule_doubles_from_the_base(client: t.Any, receiver: Receiver, topic: str) -> None:
    path = f"/flaky-{topic}"
    receiver.script(path, Answer({"code": 500}), Answer({"code": 500}))
    task_id = create(client, topic, receiver.url(path), url=SEED, retry=3)
    requests = receiver.wait_task(task_id, count=3, timeout=20)
    gaps = [b.at - a.at for a, b in zip(requests, requests[1:])]
    assert 1.0 <= gaps[0] < 1.6 and 2.0 <= gaps[1] < 2.6, gaps
    assert [r.headers["X-Httpqueue-Attempt"] for r in requests] == ["1", "2", "3"]
    task = wait_state(client, task_id, "succeeded")
    assert task["has_retry"] == 2 and task["attempts"] == 3


def test_retries_exhausted_leave_a_failed_task_with_its_error(client: t.Any, receiver: Receiver, topic: str) -> None:
    path = f"/fail-{topic}"
    receiver.default(path, Answer({"code": 7}))
    task_id = create(client, topic, receiver.url(path), url=SEED, retry=1)
    task = wait_state(client, task_id, "failed", timeout=20)
    assert len(receiver.for_task(task_id)) == 2
    assert task["has_retry"] == 1 and task["last_code"] == 7
    assert '{"code": 7}' in task["last_error"]


def test_code_101_waits_for_retry_after_without_counting_a_failure(client: t.Any, receiver: Receiver,
                                                                   topic: str) -> None:
    path = f"/busy-{topic}"
    receiver.script(path, Answer({"code": 101}, headers={"Retry-After": "1"}))
    task_id = create(client, topic, receiver.url(path), url=SEED, retry=0)
    first, second = receiver.wait_task(task_id, count=2, timeout=15)
    assert second.at - first.at >= 1.0
    task = wait_state(client, task_id, "succeeded")
    assert task["has_retry"] == 0 and task["throttled"] == 1


@pytest.mark.parametrize("answer, words", [
    (Answer(b"<html>oops</html>"), "not JSON"),
    (Answer({"code": 100}, delay=3.0), "no answer within 2s"),
    (Answer(reset=True), "connection failed"),
])
def test_bad_answers_are_failed_attempts(client: t.Any, receiver: Receiver, topic: str, answer: Answer,
                                         words: str) -> None:
    path = f"/bad-{topic}"
    receiver.default(path, answer)
    task_id = create(client, topic, receiver.url(path), url=SEED, retry=0)
    task = wait_state(client, task_id, "failed", timeout=20)
    assert words in task["last_error"]


def test_connection_refused_is_a_failed_attempt(client: t.Any, topic: str) -> None:
    from httpqueue.embedded import free_port

    task_id = create(client, topic, f"http://127.0.0.1:{free_port()}/", url=SEED, delay=0, retry=0)
    task = wait_state(client, task_id, "failed")
    assert "connection failed" in task["last_error"]


def test_delete_before_firing_prevents_the_callback(client: t.Any, receiver: Receiver, topic: str) -> None:
    near = create(client, topic, receiver.url("/ok"), url=SEED, delay=1.0)            # already queued as an ETA message
    far = create(client, topic, receiver.url("/ok"), url=SEED, delay=3.0)             # parked in the timer
    for task_id in (near, far):
        response = client.post("/delete", json={"id": task_id})
        assert response.status_code == 200 and response.get_json()["state"] == "deleted"
    sentinel = create(client, topic, receiver.url("/ok"), url=SEED, delay=3.5)
    receiver.wait_task(sentinel, timeout=15)
    assert receiver.for_task(near) == [] and receiver.for_task(far) == []
    assert query(client, near)["state"] == "deleted"
    assert client.post("/delete", json={"id": near}).status_code == 200  # idempotent


def test_query_shows_every_state_and_delete_refuses_started_tasks(client: t.Any, receiver: Receiver,
                                                                 topic: str) -> None:
    parked = create(client, topic, receiver.url("/ok"), url=SEED, delay=3600)
    soon = create(client, topic, receiver.url("/ok"), url=SEED, delay=0.4)  # due very soon: published at once
    assert query(client, parked)["state"] == "scheduled" and query(client, soon)["state"] == "queued"
    slow = f"/slow-{topic}"
    receiver.script(slow, Answer({"code": 500}, delay=1.0), Answer({"code": 100}, delay=1.0))
    task_id = create(client, topic, receiver.url(slow), url=SEED, retry=1, delay=0)
    wait_state(client, task_id, "delivering")
    refused = client.post("/delete", json={"id": task_id})
    assert refused.status_code == 409 and "being delivered" in refused.get_json()["error"]
    # "retrying" lasts only until the promoter queues the retry (within the horizon): read it from the history
    def first_attempt() -> dict[str, t.Any] | None:
        return next((e for e in events(client, task_id) if e["event"] == "attempt"), None)
    attempt = wait_until(first_attempt, 15, "first attempt recorded")
    assert attempt["outcome"] == "retrying" and attempt["next"] >= attempt["t"] + 1000
    done = wait_state(client, task_id, "succeeded")
    assert done["finished_time_ms"] is not None
    refused = client.post("/delete", json={"id": task_id})
    assert refused.status_code == 409 and refused.get_json()["state"] == "succeeded"


def test_history_records_each_attempt(client: t.Any, receiver: Receiver, topic: str, app: t.Any) -> None:
    path = f"/hist-{topic}"
    receiver.script(path, Answer({"code": 500}))
    task_id = create(client, topic, receiver.url(path), url=SEED, retry=2)
    wait_state(client, task_id, "succeeded")
    recorded = app.extensions["httpqueue"].store.history(task_id)
    attempts = [e for e in recorded if e["event"] == "attempt"]
    assert [e["outcome"] for e in attempts] == ["retrying", "succeeded"]
    assert attempts[0]["code"] == 500 and attempts[1]["code"] == 100
    assert recorded[0]["event"] == "created"
