"""Every bad input gets a 4xx with a message that says what is wrong, and nothing is stored."""
from __future__ import annotations

import json
import typing as t

import pytest

from httpqueue.config import Settings
from httpqueue.store.keys import Keys

GOOD = {"topic": "order", "delay": 15, "retry": 3, "callback": "http://127.0.0.1:8888/", "content": "hello"}


def stored_tasks(rclient: t.Any, settings: Settings) -> int:
    """Task hashes in the app's Redis, counted from the keys themselves (not the statistics)."""
    keys = Keys(settings.key_prefix, settings.shards)
    return sum(1 for shard in range(keys.shards) for _ in rclient.scan_iter(match=f"{keys.task_prefix(shard)}*"))


@pytest.mark.parametrize("change, field, words", [
    ({"delay": -1}, "delay", "greater than or equal to 0"),
    ({"delay": "15"}, "delay", "must be a number"),
    ({"delay": True}, "delay", "must be a number"),
    ({"delay": 10 ** 12}, "delay", "less than or equal to 31622400 seconds"),
    ({"delay": None}, "delay", "null"),
    ({"retry": -1}, "retry", "greater than or equal to 0"),
    ({"retry": 1000}, "retry", "less than or equal to 30"),
    ({"retry": 1.5}, "retry", "whole number"),
    ({"retry": "3"}, "retry", "must be a number"),
    ({"callback": "ftp://127.0.0.1/"}, "callback", "URL"),
    ({"callback": "not a url"}, "callback", "URL"),
    ({"callback": "http://127.0.0.1/" + "a" * 3000}, "callback", "2048"),
    ({"callback": "http://10.0.0.5/"}, "callback", "private"),
    ({"topic": ""}, "topic", "Length"),
    ({"topic": "x" * 129}, "topic", "Length"),
    ({"topic": "a\nb"}, "topic", "control characters"),
    ({"topic": 5}, "topic", "Not a valid string"),
    ({"content": "x" * 300_000}, "content", "bytes"),
    ({"bogus": 1}, "bogus", "Unknown field"),
])
def test_invalid_field_is_400_naming_the_field(client: t.Any, rclient: t.Any, settings: Settings,
                                               change: dict[str, t.Any], field: str, words: str) -> None:
    before = stored_tasks(rclient, settings)
    body = {**GOOD, **change}
    response = client.post("/create", json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    doc = response.get_json()
    assert field in doc["fields"], doc
    assert words.lower() in json.dumps(doc).lower(), doc
    assert field in doc["error"]
    assert stored_tasks(rclient, settings) == before


@pytest.mark.parametrize("missing", ["topic", "delay", "callback"])
def test_missing_required_field(client: t.Any, missing: str) -> None:
    body = {k: v for k, v in GOOD.items() if k != missing}
    response = client.post("/create", json=body)
    assert response.status_code == 400
    assert "Missing data for required field" in response.get_json()["fields"][missing][0]


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe", b"[1, 2]", b"42", b"null"])
def test_body_that_is_not_a_json_object(client: t.Any, rclient: t.Any, settings: Settings, raw: bytes) -> None:
    before = stored_tasks(rclient, settings)
    response = client.post("/create", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]
    assert stored_tasks(rclient, settings) == before


def test_body_without_json_content_type_is_still_read(client: t.Any) -> None:
    """The seed read the body whatever its Content-Type; its clients keep working."""
    response = client.post("/create", data=json.dumps({**GOOD, "delay": 3600}), content_type="text/plain")
    assert response.status_code == 200
    assert response.get_json()["id"]


@pytest.mark.parametrize("path", ["/create", "/delete", "/query"])
def test_wrong_method_is_405_with_json(client: t.Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 405
    assert "POST" in response.get_json()["error"]


def test_oversized_body_is_413(client: t.Any, settings: t.Any) -> None:
    response = client.post("/create", data=b"{" + b" " * settings.max_body + b"}", content_type="application/json")
    assert response.status_code == 413
    assert "larger than" in response.get_json()["error"]


def test_unknown_path_is_404_json(client: t.Any) -> None:
    response = client.post("/nope", json={})
    assert response.status_code == 404
    assert response.get_json()["error"] == "no such endpoint: /nope"


@pytest.mark.parametrize("path", ["/query", "/delete"])
def test_unknown_id_is_404(client: t.Any, path: str) -> None:
    response = client.post(path, json={"id": "does-not-exist"})
    assert response.status_code == 404
    assert "does-not-exist" in response.get_json()["error"]


@pytest.mark.parametrize("path", ["/query", "/delete"])
def test_id_must_be_a_string(client: t.Any, path: str) -> None:
    response = client.post(path, json={"id": 12})
    assert response.status_code == 400
    assert "id" in response.get_json()["fields"]


def test_create_accepts_any_json_content_and_query_returns_it(client: t.Any) -> None:
    content = {"nested": [1, 2.5, None, True, "é"]}
    created = client.post("/create", json={**GOOD, "delay": 3600, "content": content})
    assert created.status_code == 200
    task = client.post("/query", json=created.get_json()).get_json()
    assert task["content"] == content


def test_query_has_the_seed_fields(client: t.Any) -> None:
    created = client.post("/create", json={**GOOD, "delay": 100}).get_json()
    task = client.post("/query", json=created).get_json()
    seed_fields = ["id", "topic", "execute_time", "max_retry", "has_retry", "callback", "content", "creat_time"]
    assert all(name in task for name in seed_fields)
    assert isinstance(task["execute_time"], int) and isinstance(task["creat_time"], int)
    assert task["execute_time"] - task["creat_time"] in (99, 100, 101)
    assert task["max_retry"] == 3 and task["has_retry"] == 0
    assert task["state"] == "scheduled"


def test_batch_validates_each_item(client: t.Any) -> None:
    response = client.post("/v1/tasks/batch", json={"tasks": [
        {**GOOD, "delay": 3600}, {**GOOD, "delay": -5}, {**GOOD, "topic": "b", "delay": 3600}]})
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert "id" in results[0] and "id" in results[2]
    assert "delay" in results[1]["fields"]
    assert client.post("/query", json={"id": results[2]["id"]}).get_json()["topic"] == "b"


def test_openapi_document_validates(client: t.Any) -> None:
    from openapi_spec_validator import validate

    spec = client.get("/openapi.json").get_json()
    validate(spec)
    assert {"/create", "/delete", "/query"} <= set(spec["paths"])
