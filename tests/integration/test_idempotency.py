"""Idempotent creates: a client id or an Idempotency-Key makes a repeated create return the first task."""
from __future__ import annotations

import concurrent.futures
import typing as t
import uuid

import pytest

from httpqueue.clock import now_ms

from tests.support.api import body, count, task, wait_state
from tests.support.receiver import Receiver


PARKED = {"delay": 3600, "content": {"n": 1}}
"""The fields the creates here share: a task parked an hour out, so nothing is delivered unless a test asks."""


def parked(topic: str, **extra: t.Any) -> dict[str, t.Any]:
    """A create request (:func:`tests.support.api.body`) with :data:`PARKED` and ``extra`` over it."""
    return body(topic, **{**PARKED, **extra})


def test_v1_idempotency_key_replays_the_first_task(client: t.Any, topic: str) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = client.post("/v1/tasks", json=parked(topic), headers=key)
    again = client.post("/v1/tasks", json=parked(topic), headers=key)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["replayed"] is True
    assert again.get_json()["id"] == first.get_json()["id"]
    assert count(client, topic, "scheduled") == 1


def next_millisecond() -> None:
    """Return once the clock's millisecond has changed (a bounded spin: at most one millisecond)."""
    start = now_ms()
    while now_ms() == start:
        pass


def test_seed_create_with_idempotency_key_answers_the_same_id(client: t.Any, topic: str) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = client.post("/create", json=parked(topic), headers=key)
    next_millisecond()  # within the same one, the repeat is taken for a re-sent first run (see docs/creating.rst)
    again = client.post("/create", json=parked(topic), headers=key)
    assert first.status_code == 200 and first.get_json().keys() == {"id"}
    assert again.status_code == 200 and again.get_json() == {"id": first.get_json()["id"], "replayed": True}
    assert count(client, topic, "scheduled") == 1


def test_seed_create_without_key_is_unchanged(client: t.Any, topic: str) -> None:
    ids = {client.post("/create", json=parked(topic)).get_json()["id"] for _ in range(2)}
    assert len(ids) == 2
    assert count(client, topic, "scheduled") == 2


def test_same_key_with_a_different_body_is_a_conflict(client: t.Any, topic: str) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    assert client.post("/v1/tasks", json=parked(topic), headers=key).status_code == 201
    response = client.post("/v1/tasks", json=parked(topic, content={"n": 2}), headers=key)
    assert response.status_code == 409
    assert "different request" in response.get_json()["error"]
    assert client.post("/create", json=parked(topic, delay=60), headers=key).status_code == 409
    assert count(client, topic, "scheduled") == 1


def test_client_id_is_the_task_id_and_replays(client: t.Any, topic: str) -> None:
    task_id = f"invoice:{uuid.uuid4().hex[:8]}.v1_x-y"
    first = client.post("/v1/tasks", json=parked(topic, id=task_id))
    assert first.status_code == 201 and first.get_json()["id"] == task_id
    assert task(client, task_id)["topic"] == topic
    again = client.post("/v1/tasks", json=parked(topic, id=task_id))
    assert again.status_code == 200 and again.get_json()["id"] == task_id
    assert client.post("/v1/tasks", json=parked(topic, id=task_id, retry=2)).status_code == 409


def test_client_id_cannot_take_over_a_server_generated_id(client: t.Any, topic: str) -> None:
    plain = client.post("/v1/tasks", json=parked(topic)).get_json()["id"]
    response = client.post("/v1/tasks", json=parked(topic, id=plain))
    assert response.status_code == 409
    assert task(client, plain)["content"] == {"n": 1}


@pytest.mark.parametrize("task_id", ["", "a b", "x" * 129, "ä", "a/b", "a\n"])
def test_client_id_is_validated(client: t.Any, topic: str, task_id: str) -> None:
    response = client.post("/v1/tasks", json=parked(topic, id=task_id))
    assert response.status_code == 400
    assert "id" in response.get_json()["fields"]


@pytest.mark.parametrize("key", ["", "x" * 256, "a\tb", "é"])
def test_bad_idempotency_key_is_refused(client: t.Any, topic: str, key: str) -> None:
    response = client.post("/v1/tasks", json=parked(topic), headers={"Idempotency-Key": key})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["fields"]


def test_replay_after_delivery_returns_the_finished_task(client: t.Any, topic: str, receiver: Receiver,
                                                          worker: t.Any) -> None:
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    fields = body(topic, receiver.url("/idem"), **{**PARKED, "delay": 0})
    task_id = client.post("/v1/tasks", json=fields, headers=key).get_json()["id"]
    receiver.wait_task(task_id)
    wait_state(client, task_id, "succeeded", timeout=10)
    again = client.post("/v1/tasks", json=fields, headers=key)
    assert again.status_code == 200
    assert again.get_json()["state"] == "succeeded" and again.get_json()["attempts"] == 1
    assert count(client, topic, "succeeded") == 1


def test_batch_items_are_idempotent_one_by_one(client: t.Any, topic: str) -> None:
    taken = f"b-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/tasks", json=parked(topic, id=taken)).status_code == 201
    fresh = f"b-{uuid.uuid4().hex[:8]}"
    items = [parked(topic, id=fresh), parked(topic, id=fresh), parked(topic, id=taken, retry=1),
             parked(topic, id=taken), parked(topic, id="bad id"), parked(topic)]
    response = client.post("/v1/tasks/batch", json={"tasks": items})
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert results[0] == {"id": fresh}
    assert results[1] == {"id": fresh, "replayed": True}
    assert "different request" in results[2]["error"] and "id" in results[2]["fields"]
    assert results[3] == {"id": taken, "replayed": True}
    assert "id" in results[4]["fields"]
    assert set(results[5]) == {"id"}
    assert count(client, topic, "scheduled") == 3


def test_concurrent_creates_with_one_key_make_one_task(app: t.Any, topic: str) -> None:
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}

    def post(_: int) -> tuple[int, str]:
        response = app.test_client().post("/v1/tasks", json=parked(topic), headers=key)
        return response.status_code, response.get_json()["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(16)))
    assert sorted(code for code, _ in answers) == [200] * 15 + [201]
    assert len({task_id for _, task_id in answers}) == 1
    assert count(app.test_client(), topic, "scheduled") == 1
