"""The /v1 resource API: listing with cursors, statistics, history, retry-now, delete."""
from __future__ import annotations

import typing as t

import pytest

from tests.support.api import create, event_names, wait_state
from tests.support.receiver import Answer, Receiver


def test_listing_pages_through_every_task_of_a_topic_once(client: t.Any, topic: str) -> None:
    ids = {create(client, topic, delay=3600 + i) for i in range(23)}
    create(client, topic + "-other", delay=3600)
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        query = {"topic": topic, "limit": 5, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/tasks", query_string=query).get_json()
        assert len(page["tasks"]) <= 5
        seen += [task["id"] for task in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)


def test_listing_filters_by_state(client: t.Any, topic: str) -> None:
    waiting = create(client, topic, delay=3600)
    deleted = create(client, topic, delay=3600)
    assert client.delete(f"/v1/tasks/{deleted}").status_code == 200
    page = client.get("/v1/tasks", query_string={"topic": topic, "state": "deleted"}).get_json()
    assert [task["id"] for task in page["tasks"]] == [deleted]
    page = client.get("/v1/tasks", query_string={"topic": topic, "state": "scheduled"}).get_json()
    assert [task["id"] for task in page["tasks"]] == [waiting]


@pytest.mark.parametrize("query, field", [({"state": "sleeping"}, "state"), ({"limit": 0}, "limit"),
                                          ({"cursor": "x"}, "cursor"), ({"color": "red"}, "color")])
def test_listing_rejects_bad_arguments(client: t.Any, query: dict[str, t.Any], field: str) -> None:
    response = client.get("/v1/tasks", query_string=query)
    assert response.status_code == 400
    assert field in response.get_json()["error"]


def test_stats_count_states_per_topic(client: t.Any, topic: str) -> None:
    for _ in range(3):
        create(client, topic, delay=3600)
    client.delete(f"/v1/tasks/{create(client, topic, delay=3600)}")
    stats = client.get("/v1/stats").get_json()
    assert stats["topics"][topic]["scheduled"] == 3
    assert stats["topics"][topic]["deleted"] == 1
    assert stats["totals"]["scheduled"] >= 3


def test_unknown_task_is_404_everywhere(client: t.Any) -> None:
    for method, path in (("get", "/v1/tasks/nope"), ("delete", "/v1/tasks/nope"),
                         ("get", "/v1/tasks/nope/history"), ("post", "/v1/tasks/nope/retry")):
        assert getattr(client, method)(path).status_code == 404


@pytest.mark.usefixtures("worker")
def test_retry_now_gives_a_failed_task_another_attempt(client: t.Any, receiver: Receiver, topic: str) -> None:
    path = f"/v1-{topic}"
    receiver.script(path, Answer({"code": 500}))
    task_id = create(client, topic, receiver.url(path), delay=0)
    wait_state(client, task_id, "failed")
    assert client.post(f"/v1/tasks/{task_id}/retry").get_json()["previous_state"] == "failed"
    receiver.wait_task(task_id, count=2)
    wait_state(client, task_id, "succeeded")
    events = event_names(client, task_id)
    assert events[0] == "created" and "requeued" in events and events.count("attempt") == 2
    assert client.post(f"/v1/tasks/{task_id}/retry").status_code == 409


@pytest.mark.parametrize("extra", [{}, {"retry": 2, "method": "PUT", "timeout": 3, "headers": {"X-A": "b"},
                                         "retry_policy": {"base": 2}, "content": {"deep": [1, {"x": None}]}},
                                   {"execute_at": "2026-12-24T18:00:00.123Z"}, {"execute_at": 1798135200.5}])
def test_the_create_answer_is_the_stored_task(client: t.Any, topic: str, extra: dict[str, t.Any]) -> None:
    """``POST /v1/tasks`` answers the task built from what it wrote: exactly what a read gives."""
    fields = {"topic": topic, "callback": "http://127.0.0.1:9/x", **({"delay": 3600} if "execute_at" not in extra
                                                                    else {}), **extra}
    answer = client.post("/v1/tasks", json=fields)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert answer.get_json() == client.get(f"/v1/tasks/{answer.get_json()['id']}").get_json()
