"""Talking to the API in tests: create a task, read it back, wait for a state.

Every API test goes through these, so a request's shape is written once.
``client`` is a Flask test client (``app.test_client()``); answers are the
JSON documents of ``api/documents.py``. Waits poll with a deadline.
"""
from __future__ import annotations

import typing as t

from tests.support.processes import wait_until

NOWHERE = "http://127.0.0.1:9/"
"""A callback for tasks that must never be delivered in the test (the discard port; nothing listens)."""

SEED = "/create"
"""The original Go httpqueue's create endpoint (answers 200 with ``{"id"}``)."""

V1 = "/v1/tasks"
"""The resource API's create endpoint (answers 201 with the task document)."""

DEFAULT_DELAY = 0.1
"""Seconds until a task is due when the test gives neither ``delay`` nor ``execute_at``."""


def body(topic: str, callback: str = NOWHERE, **fields: t.Any) -> dict[str, t.Any]:
    """A create request: ``topic``, ``callback`` and ``fields``; ``delay`` defaults unless ``execute_at`` is given."""
    doc: dict[str, t.Any] = {"topic": topic, "callback": callback, **fields}
    if "execute_at" not in doc:
        doc.setdefault("delay", DEFAULT_DELAY)
    return doc


def submit(client: t.Any, topic: str, callback: str = NOWHERE, *, url: str = V1, status: int | None = None,
           request_headers: t.Mapping[str, str] | None = None, **fields: t.Any) -> dict[str, t.Any]:
    """POST a create to ``url`` and return its JSON answer, asserting its status.

    ``status`` defaults to the success of ``url`` (200 for :data:`SEED`, 201 for :data:`V1`);
    ``request_headers`` are HTTP headers of the create request (``headers`` is the task's field).
    """
    response = client.post(url, json=body(topic, callback, **fields), headers=dict(request_headers or {}))
    expected = status if status is not None else (200 if url == SEED else 201)
    assert response.status_code == expected, response.get_data(as_text=True)
    return t.cast(dict[str, t.Any], response.get_json())


def create(client: t.Any, topic: str, callback: str = NOWHERE, **fields: t.Any) -> str:
    """Create a task (see :func:`submit`) and return its id."""
    return str(submit(client, topic, callback, **fields)["id"])


def query(client: t.Any, task_id: str) -> dict[str, t.Any]:
    """The task document through the seed's ``/query``."""
    response = client.post("/query", json={"id": task_id})
    assert response.status_code == 200, response.get_data(as_text=True)
    return t.cast(dict[str, t.Any], response.get_json())


def task(client: t.Any, task_id: str) -> dict[str, t.Any]:
    """The task document through ``GET /v1/tasks/<id>``."""
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return t.cast(dict[str, t.Any], response.get_json())


def state_of(client: t.Any, task_id: str) -> str:
    return str(query(client, task_id)["state"])


def wait_state(client: t.Any, task_id: str, state: str, timeout: float = 15) -> dict[str, t.Any]:
    """Poll until the task is in ``state``; returns its document then."""
    def reached() -> dict[str, t.Any] | None:
        doc = query(client, task_id)
        return doc if doc["state"] == state else None
    return t.cast(dict[str, t.Any], wait_until(reached, timeout, f"task {task_id} {state}"))


def wait_states(client: t.Any, task_ids: t.Iterable[str], state: str, timeout: float = 20) -> None:
    """Poll until every one of ``task_ids`` is in ``state``."""
    ids = list(task_ids)
    wait_until(lambda: all(state_of(client, i) == state for i in ids), timeout, f"all {len(ids)} tasks {state}")


def events(client: t.Any, task_id: str) -> list[dict[str, t.Any]]:
    """The task's lifecycle events (``GET /v1/tasks/<id>/history``), oldest first."""
    response = client.get(f"/v1/tasks/{task_id}/history")
    assert response.status_code == 200, response.get_data(as_text=True)
    return t.cast(list[dict[str, t.Any]], response.get_json()["events"])


def event_names(client: t.Any, task_id: str) -> list[str]:
    return [e["event"] for e in events(client, task_id)]


def count(client: t.Any, topic: str, state: str) -> int:
    """How many tasks of ``topic`` are in ``state`` (``GET /v1/stats``)."""
    return int(client.get("/v1/stats").get_json()["topics"].get(topic, {}).get(state, 0))
