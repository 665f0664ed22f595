"""execute_at and per-task delivery options, end to end: the Flask app creates, a real worker delivers."""
from __future__ import annotations

import datetime
import time
import typing as t

import pytest

from httpqueue.api.schemas import ExecuteAt
from httpqueue.worker.attempts import policy_backoff_ms
from tests.support.api import NOWHERE, SEED, body, submit, wait_state
from tests.support.receiver import Answer, Receiver


# -- execute_at --------------------------------------------------------------------------------------------

def test_execute_at_rfc3339_fires_at_that_time(client: t.Any, receiver: Receiver, topic: str, worker: t.Any) -> None:
    when = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=2))) + datetime.timedelta(seconds=1)
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    task = submit(client, topic, receiver.url("/at"), execute_at=when.isoformat(timespec="milliseconds"))
    assert task["execute_time_ms"] == round(when.timestamp() * 1000)
    [request] = receiver.wait_task(task["id"])
    assert when.timestamp() <= request.at < when.timestamp() + 0.5


def test_execute_at_unix_seconds_keeps_milliseconds(client: t.Any, topic: str) -> None:
    when = round(time.time() + 3600, 3)
    task = submit(client, topic, NOWHERE, execute_at=when)
    assert task["execute_time_ms"] == round(when * 1000)
    assert task["state"] == "scheduled"
    zulu = submit(client, topic, NOWHERE, execute_at="2099-01-01T00:00:00Z", status=400)
    assert "execute_at" in zulu["fields"]  # beyond max_delay


def test_execute_at_in_the_past_fires_at_once(client: t.Any, receiver: Receiver, topic: str, worker: t.Any) -> None:
    before = time.time()
    task = submit(client, topic, receiver.url("/past"), execute_at="2020-01-01T00:00:00+00:00")
    assert task["execute_time_ms"] >= int(before * 1000)  # now, not 2020
    [request] = receiver.wait_task(task["id"])
    assert request.at < before + 2


def test_seed_create_accepts_execute_at_instead_of_delay(client: t.Any, topic: str) -> None:
    answer = submit(client, topic, NOWHERE, url=SEED, execute_at=time.time() + 60)
    assert answer.keys() == {"id"}
    query = client.post("/query", json={"id": answer["id"]}).get_json()
    assert query["state"] == "scheduled"


@pytest.mark.parametrize("fields, field", [
    ({"execute_at": "2026-01-01T00:00:00"}, "execute_at"),     # no offset
    ({"execute_at": "tomorrow"}, "execute_at"),
    ({"execute_at": "2026-W01-1T00:00Z"}, "execute_at"),       # ISO 8601, but not RFC 3339
    ({"execute_at": "20260101T000000Z"}, "execute_at"),
    ({"execute_at": "2026-02-30T00:00:00Z"}, "execute_at"),
    ({"execute_at": "2026-01-01T00:00:00Z "}, "execute_at"),
    ({"execute_at": True}, "execute_at"),
    ({"execute_at": -1}, "execute_at"),
    ({"execute_at": time.time() * 1000}, "execute_at"),      # milliseconds by mistake: too far away
    ({"execute_at": time.time() + 60, "delay": 5}, "execute_at"),
])
def test_bad_execute_at_is_refused(client: t.Any, topic: str, fields: dict[str, t.Any], field: str) -> None:
    for url in ("/create", "/v1/tasks"):
        answer = submit(client, topic, NOWHERE, url=url, status=400, **fields)
        assert field in answer["fields"], answer


@pytest.mark.parametrize("text, seconds", [
    ("2026-01-01T00:00:00Z", 1767225600.0), ("2026-01-01t00:00:00.5z", 1767225600.5),
    ("2026-01-01 01:00:00+01:00", 1767225600.0), ("2026-01-01T00:00:00.123456789-00:00", 1767225600.123456),
])
def test_execute_at_reads_rfc3339(text: str, seconds: float) -> None:
    assert ExecuteAt().deserialize(text) == seconds


def test_neither_delay_nor_execute_at_is_refused(client: t.Any, topic: str) -> None:
    response = client.post(SEED, json={"topic": topic, "callback": NOWHERE})
    assert response.status_code == 400 and "delay" in response.get_json()["fields"]


# -- method, headers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, has_body", [("PUT", True), ("PATCH", True), ("GET", False), ("DELETE", False)])
def test_method_is_used_and_bodyless_methods_send_no_body(client: t.Any, receiver: Receiver, topic: str,
                                                          worker: t.Any, method: str, has_body: bool) -> None:
    task = submit(client, topic, receiver.url("/method"), method=method, content={"x": 1})
    [request] = receiver.wait_task(task["id"])
    assert request.method == method
    assert request.headers["X-Httpqueue-Id"] == task["id"]
    if has_body:
        assert request.json == {"id": task["id"], "topic": topic, "content": {"x": 1}}
    else:
        assert request.body == b"" and "Content-Type" not in request.headers
    assert wait_state(client, task["id"], "succeeded")["options"]["method"] == method


def test_extra_headers_are_sent_and_cannot_replace_httpqueues(client: t.Any, receiver: Receiver, topic: str,
                                                              worker: t.Any) -> None:
    task = submit(client, topic, receiver.url("/headers"), headers={"X-Tenant": "acme", "X-Trace": "a b c"})
    [request] = receiver.wait_task(task["id"])
    assert request.headers["X-Tenant"] == "acme" and request.headers["X-Trace"] == "a b c"
    assert request.headers["Content-Type"] == "application/json"
    assert task["options"]["headers"] == {"X-Tenant": "acme", "X-Trace": "a b c"}


@pytest.mark.parametrize("headers", [
    {"Host": "example.com"}, {"Connection": "close"}, {"Content-Length": "5"}, {"transfer-encoding": "chunked"},
    {"Authorization": "Bearer x"}, {"Cookie": "a=b"}, {"Proxy-Authorization": "x"}, {"Proxy-Foo": "x"},
    {"X-Httpqueue-Id": "forged"}, {"webhook-signature": "v1,x"}, {"Content-Type": "text/plain"},
    {"Bad Name": "x"}, {"X-A": "line\r\nInjected: 1"}, {"X-A": 5}, {"X-A": "v" * 1025},
    {f"X-H{i}": "v" for i in range(21)}, {"X-A": "1", "x-a": "2"}, {"": "x"},
])
def test_denied_or_malformed_headers_are_refused(client: t.Any, topic: str, headers: dict[str, t.Any]) -> None:
    answer = submit(client, topic, NOWHERE, status=400, headers=headers)
    assert "headers" in answer["fields"], answer


@pytest.mark.parametrize("fields, field", [
    ({"method": "TRACE"}, "method"), ({"timeout": 0}, "timeout"), ({"timeout": 3600}, "timeout"),
    ({"success": "3xx"}, "success"), ({"retry_policy": {"base": 0}}, "retry_policy"),
    ({"retry_policy": {"factor": 100}}, "retry_policy"), ({"retry_policy": {"colour": 1}}, "retry_policy"),
    ({"retry_policy": {"jitter": "yes"}}, "retry_policy"),
])
def test_bad_options_are_refused(client: t.Any, topic: str, fields: dict[str, t.Any], field: str) -> None:
    answer = submit(client, topic, NOWHERE, status=400, **fields)
    assert field in answer["fields"], answer


# -- timeout, success rule ---------------------------------------------------------------------------------

def test_task_timeout_cuts_a_slow_receiver(client: t.Any, receiver: Receiver, topic: str, worker: t.Any) -> None:
    path = f"/slow-{topic}"
    receiver.default(path, Answer(delay=1.2))
    task = submit(client, topic, receiver.url(path), timeout=0.3)
    failed = wait_state(client, task["id"], "failed")
    assert "no answer within 0.3s" in failed["last_error"]
    patient = submit(client, topic, receiver.url(path))  # the default (2 s) waits for it
    wait_state(client, patient["id"], "succeeded")


def test_success_rule_2xx_accepts_any_2xx_and_code100_does_not(client: t.Any, receiver: Receiver, topic: str,
                                                               worker: t.Any) -> None:
    path = f"/plain-{topic}"
    receiver.default(path, Answer(body="", status=204))
    lenient = submit(client, topic, receiver.url(path), success="2xx")
    strict = submit(client, topic, receiver.url(path))
    assert wait_state(client, lenient["id"], "succeeded")["last_code"] == 204
    wait_state(client, strict["id"], "failed")


def test_success_rule_2xx_fails_on_other_statuses(client: t.Any, receiver: Receiver, topic: str,
                                                  worker: t.Any) -> None:
    path = f"/err-{topic}"
    receiver.default(path, Answer({"code": 100}, status=500))
    task = submit(client, topic, receiver.url(path), success="2xx")
    failed = wait_state(client, task["id"], "failed")
    assert failed["last_code"] == 500 and "HTTP 500" in failed["last_error"]


def test_success_rule_2xx_throttles_on_429(client: t.Any, receiver: Receiver, topic: str, worker: t.Any) -> None:
    path = f"/busy-{topic}"
    receiver.script(path, Answer("", status=429, headers={"Retry-After": "0"}))
    receiver.default(path, Answer("", status=200))
    task = submit(client, topic, receiver.url(path), success="2xx")
    done = wait_state(client, task["id"], "succeeded")
    assert done["throttled"] == 1 and done["has_retry"] == 0 and len(receiver.for_task(task["id"])) == 2


# -- retry policy ------------------------------------------------------------------------------------------

def test_retry_policy_sets_the_gaps(client: t.Any, receiver: Receiver, topic: str, worker: t.Any) -> None:
    path = f"/flaky-{topic}"
    receiver.script(path, Answer({"code": 500}), Answer({"code": 500}))
    task = submit(client, topic, receiver.url(path), retry=3,
                  retry_policy={"base": 0.2, "factor": 3, "max_interval": 0.5})
    requests = receiver.wait_task(task["id"], count=3, timeout=10)
    gaps = [b.at - a.at for a, b in zip(requests, requests[1:])]
    assert 0.2 <= gaps[0] < 0.5 and 0.5 <= gaps[1] < 0.8, gaps  # 0.2, then min(0.6, 0.5)
    assert wait_state(client, task["id"], "succeeded")["has_retry"] == 2


def test_retry_policy_max_duration_fails_the_task_early(client: t.Any, receiver: Receiver, topic: str,
                                                        worker: t.Any) -> None:
    path = f"/down-{topic}"
    receiver.default(path, Answer({"code": 500}))
    task = submit(client, topic, receiver.url(path), retry=30,
                  retry_policy={"base": 0.2, "factor": 1, "max_duration": 1})
    failed = wait_state(client, task["id"], "failed")
    assert "max_duration" in failed["last_error"]
    assert 3 <= failed["attempts"] <= 6 and failed["has_retry"] < 30
    assert failed["options"]["retry_policy"] == {"base": 0.2, "factor": 1, "max_duration": 1}


def test_policy_backoff_formula() -> None:
    assert [policy_backoff_ms({"base": 2, "factor": 3}, n) for n in range(4)] == [2000, 6000, 18000, 54000]
    assert policy_backoff_ms({"base": 2, "max_interval": 5}, 10) == 5000
    assert policy_backoff_ms({}, 2, base=1) == 4000  # the settings' base, factor 2 (the seed's doubling)
    waits = {policy_backoff_ms({"base": 10, "jitter": True}, 0) for _ in range(50)}
    assert len(waits) > 1 and all(0 <= w <= 10_000 for w in waits)
    assert policy_backoff_ms({"base": 10, "jitter": False}, 0, jitter=True) == 10_000


# -- batch ---------------------------------------------------------------------------------------------------

def test_batch_items_take_the_new_fields(client: t.Any, receiver: Receiver, topic: str, worker: t.Any) -> None:
    items = [{"topic": topic, "execute_at": time.time() + 0.2, "callback": receiver.url("/b"), "method": "PUT",
              "headers": {"X-Item": "0"}},
             {"topic": topic, "delay": 0.1, "callback": receiver.url("/b"), "success": "2xx"},
             {"topic": topic, "delay": 0.1, "callback": receiver.url("/b"), "headers": {"Host": "x"}},
             {"topic": topic, "delay": 0.1, "execute_at": 1, "callback": receiver.url("/b")}]
    results = client.post("/v1/tasks/batch", json={"tasks": items}).get_json()["results"]
    assert "headers" in results[2]["fields"] and "execute_at" in results[3]["fields"]
    [put] = receiver.wait_task(results[0]["id"])
    assert put.method == "PUT" and put.headers["X-Item"] == "0"
    wait_state(client, results[1]["id"], "succeeded")


def test_batch_size_limit(client: t.Any, topic: str) -> None:
    item = body(topic, delay=3600)
    response = client.post("/v1/tasks/batch", json={"tasks": [item] * 1001})
    assert response.status_code == 400 and "tasks" in response.get_json()["fields"]
    assert client.post("/v1/tasks/batch", json={"tasks": []}).status_code == 400


def test_openapi_describes_the_new_fields(client: t.Any) -> None:
    spec = client.get("/openapi.json").get_json()
    create = spec["components"]["schemas"]["CreateTask"]["properties"]
    assert {"execute_at", "id", "method", "headers", "timeout", "success", "retry_policy"} <= create.keys()
    assert all(create[name].get("description") for name in ("execute_at", "id", "method", "headers"))
    for path, status in (("/create", "200"), ("/v1/tasks", "201")):
        post = spec["paths"][path]["post"]
        assert "Idempotency-Key" in [p["name"] for p in post["parameters"]]
        assert status in post["responses"]
    assert "409" in spec["paths"]["/v1/tasks"]["post"]["responses"]
