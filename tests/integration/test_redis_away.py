"""Redis away: every route of the OpenAPI document answers 503 with a JSON error and Retry-After, never a 500.

The test starts a Redis of its own (the suite's must stay up for the other
tests), builds an app on it, stores a task and a schedule, stops that Redis
and calls every operation that ``/openapi.json`` lists, with a plausible body.
``/health`` (liveness: the process serves) answers 200 throughout; ``/ready``
and everything that needs the store answer 503. Nothing sent during the
outage is stored. Then Redis comes back on the same port and data directory
(append-only file), and the API recovers without a restart: what was stored
before is still there, and no route answers a 5xx about the store.
"""
from __future__ import annotations

import time
import typing as t

import pytest

from httpqueue.config import Settings
from httpqueue.embedded import EmbeddedRedis, free_port

NOWHERE = "http://127.0.0.1:9/"
"""A callback for tasks that must never be delivered (the discard port; nothing listens)."""

TOPIC = "away-topic"
"""The topic of the tasks stored before the outage, and of the topic routes."""

OUTAGE_TOPIC = "away-during-outage"
"""The topic of everything sent while Redis is away: none of it may be stored."""

OUTAGE_SCHEDULE = "away-schedule-during-outage"

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def plausible_body(path: str, kept: str, doc: dict[str, t.Any], operation: dict[str, t.Any]) -> t.Any:
    """A body the operation would accept if Redis were there, so the 503 is Redis' and not a 400.

    Known operations get a hand-written body; an operation added later gets
    one built from its schema's required fields and their examples.
    """
    task = {"topic": OUTAGE_TOPIC, "delay": 3600, "retry": 1, "callback": NOWHERE, "content": {"n": 1}}
    bodies: dict[str, t.Any] = {
        "/create": task, "/v1/tasks": task, "/v1/tasks/batch": {"tasks": [task, task]},
        "/delete": {"id": kept}, "/query": {"id": kept},
        "/v1/schedules": {"id": OUTAGE_SCHEDULE, "cron": "0 9 * * *",
                          "task": {"topic": OUTAGE_TOPIC, "callback": NOWHERE}},
        "/v1/topics/{topic}": {"rate_limit": 5, "concurrency": 2},
        "/v1/topics/{topic}/dead-letters/replay": {}, "/v1/topics/{topic}/dead-letters/delete": {},
    }
    if path in bodies:
        return bodies[path]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return {name: schema["properties"].get(name, {}).get("example", "x") for name in schema.get("required", [])}


def operations(doc: dict[str, t.Any]) -> list[tuple[str, str, dict[str, t.Any]]]:
    """(METHOD, path template, operation) for every operation of the document (``parameters`` is no method)."""
    return [(method.upper(), path, op) for path, item in doc["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS]


def call(client: t.Any, doc: dict[str, t.Any], method: str, path: str, operation: dict[str, t.Any],
         kept: str, schedule: str) -> t.Any:
    url = path.replace("{task_id}", kept).replace("{topic}", TOPIC).replace("{schedule_id}", schedule)
    body = plausible_body(path, kept, doc, operation) if "requestBody" in operation else None
    return client.open(url, method=method, json=body)


def poll(check: t.Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``check()`` is true, polling, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


@pytest.fixture
def own_redis(tmp_path: t.Any) -> t.Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def test_every_route_answers_503_while_redis_is_away_and_recovers(own_redis: EmbeddedRedis, app: t.Any) -> None:
    """``app`` (the suite's) is built first, so the process's context stays the suite's, not this Redis'."""
    from httpqueue.api import create_app

    settings = Settings.load({"redis_url": own_redis.url, "callback_allow": "127.0.0.0/8"}, environ={})
    client = create_app(settings).test_client()
    doc = client.get("/openapi.json").get_json()
    created = client.post("/create", json={"topic": TOPIC, "delay": 3600, "callback": NOWHERE})
    assert created.status_code == 200, created.get_data(as_text=True)
    kept = created.get_json()["id"]
    schedule = client.post("/v1/schedules", json={"id": "away-kept", "cron": "0 9 * * *",
                                                  "task": {"topic": TOPIC, "callback": NOWHERE}})
    assert schedule.status_code == 201, schedule.get_data(as_text=True)

    own_redis.stop()
    called = []
    for method, path, operation in operations(doc):
        response = call(client, doc, method, path, operation, kept, "away-kept")
        label = f"{method} {path}"
        called.append(label)
        text = response.get_data(as_text=True)
        assert "Traceback" not in text, label
        if path == "/health":
            assert response.status_code == 200, (label, text)
            continue
        assert response.status_code == 503, (label, response.status_code, text[:300])
        body = response.get_json()
        assert body["code"] == 503 and "unavailable" in body["error"], (label, body)
        assert int(response.headers["Retry-After"]) >= 1, label
    assert {"POST /create", "GET /ready", "POST /v1/schedules", "PATCH /v1/topics/{topic}"} <= set(called)
    assert len(called) >= 25, called

    own_redis.start()  # same port, same append-only file
    poll(lambda: client.post("/query", json={"id": kept}).status_code == 200, 15, "the API reconnects")
    assert client.post("/query", json={"id": kept}).get_json()["state"] == "scheduled"  # survived
    assert client.get("/v1/schedules/away-kept").status_code == 200
    assert client.get(f"/v1/schedules/{OUTAGE_SCHEDULE}").status_code == 404  # nothing of the outage stored
    assert not any(client.get(f"/v1/topics/{OUTAGE_TOPIC}").get_json()["counts"].values())
    assert client.get(f"/v1/topics/{TOPIC}").get_json()["rate_limit"] is None

    for method, path, operation in operations(doc):
        response = call(client, doc, method, path, operation, kept, "away-kept")
        label = f"{method} {path}"
        if path == "/ready" and response.status_code == 503:  # no worker runs here: not ready, but not for Redis
            assert "unavailable" not in response.get_json()["error"], response.get_json()
            continue
        assert response.status_code < 500, (label, response.status_code, response.get_data(as_text=True)[:300])


def test_redis_out_of_memory_is_a_503_and_stores_nothing(tmp_path: t.Any) -> None:
    """A Redis at ``maxmemory`` (``noeviction``) refuses writes: a create answers 503, not 500, and nothing is half-stored."""
    import redis

    from httpqueue.api import create_app

    server = EmbeddedRedis(tmp_path / "oom", port=free_port(), appendonly=False).start()
    try:
        raw = redis.Redis.from_url(server.url)
        raw.config_set("maxmemory-policy", "noeviction")
        app = create_app(Settings.load({"redis_url": server.url, "callback_allow": ("127.0.0.0/8",),
                                        "key_prefix": "oom"}, environ={}))
        client = app.test_client()
        task = {"topic": "oom", "delay": 3600, "callback": NOWHERE, "content": "x"}
        assert client.post("/create", json=task).status_code == 200  # the scripts are loaded while there is room
        before = raw.dbsize()
        raw.config_set("maxmemory", max(1, int(raw.info("memory")["used_memory"]) - 1024))
        answer = client.post("/create", json=task)
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.headers["Retry-After"] and "unavailable" in answer.get_json()["error"]
        batch = client.post("/v1/tasks/batch", json={"tasks": [task, task]})
        assert batch.status_code == 503
        assert raw.dbsize() == before
        raw.config_set("maxmemory", 0)
        assert client.post("/create", json=task).status_code == 200  # room again: writes go through
    finally:
        server.stop()
