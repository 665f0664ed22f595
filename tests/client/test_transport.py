"""The client's decisions without a server: waits between sends, what may be sent again, request bodies."""
from __future__ import annotations

import datetime

import pytest

from httpqueue.client import Options, Retries, RetryPolicy, TaskSpec
from httpqueue.client import calls
from httpqueue.client.errors import ConnectionFailed, InvalidRequest, NotFound, ServerError, Unavailable, error_for
from httpqueue.client.transport import Endpoint, may_resend


def test_waits_grow_are_capped_and_honour_retry_after() -> None:
    retries = Retries(attempts=6, first_wait=0.25, factor=2, max_wait=1.5)
    assert [retries.wait(n, None) for n in range(4)] == [0.25, 0.5, 1.0, 1.5]
    assert retries.wait(0, 1.2) == 1.2 and retries.wait(0, 60) == 1.5
    with pytest.raises(ValueError):
        Retries(attempts=0)


@pytest.mark.parametrize("call, error, resend", [
    (calls.create(TaskSpec("t", "http://x/"), None), Unavailable("away", status=503), True),
    (calls.create(TaskSpec("t", "http://x/"), None), ConnectionFailed("reset", sent=True), True),
    (calls.retry("a"), ConnectionFailed("refused", sent=False), True),
    (calls.retry("a"), ConnectionFailed("reset", sent=True), False),
    (calls.retry("a"), Unavailable("away", status=503), True),
    (calls.ready(), Unavailable("away", status=503), False),
    (calls.get("a"), NotFound("no", status=404), False),
    (calls.get("a"), ServerError("bug", status=500), False),
])
def test_what_may_be_sent_again(call: calls.Call[object], error: Exception, resend: bool) -> None:
    assert may_resend(call, error) is resend  # type: ignore[arg-type]


def test_every_create_carries_a_key_of_its_own_unless_it_has_an_id() -> None:
    one, two = (calls.create(TaskSpec("t", "http://x/", delay=1), None) for _ in range(2))
    assert one.headers["Idempotency-Key"] != two.headers["Idempotency-Key"]
    assert calls.create(TaskSpec("t", "http://x/", delay=1), "mine").headers == {"Idempotency-Key": "mine"}
    assert calls.create(TaskSpec("t", "http://x/", delay=1, id="x"), None).headers == {}
    batch = calls.batch([TaskSpec("t", "http://x/", delay=1), TaskSpec("t", "http://x/", delay=1, id="k")])
    assert [item["id"] for item in batch.json["tasks"]][1] == "k" and batch.json["tasks"][0]["id"]


def test_batches_are_split_at_the_api_limit() -> None:
    specs = [TaskSpec("t", "http://x/", delay=1)] * 2501
    assert [len(c) for c in calls.batch_chunks(specs)] == [1000, 1000, 501]
    with pytest.raises(ValueError):
        calls.batch(specs)


def test_spec_bodies() -> None:
    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    body = TaskSpec("t", "http://x/", {"a": 1}, execute_at=when, retry=2,
                    options=Options(timeout=3, retry_policy=RetryPolicy(base=1))).to_json()
    assert body == {"topic": "t", "callback": "http://x/", "content": {"a": 1}, "execute_at": when.timestamp(),
                    "retry": 2, "timeout": 3, "retry_policy": {"base": 1}}


def test_error_documents_become_typed_errors() -> None:
    error = error_for(400, {"code": 400, "error": "invalid request: delay: bad", "fields": {"delay": ["bad"]}})
    assert isinstance(error, InvalidRequest) and error.fields == {"delay": ["bad"]} and error.code == 400
    assert isinstance(error_for(503, {"error": "away"}, 1.0), Unavailable)
    assert isinstance(error_for(502, "<html>bad gateway</html>"), ServerError)


def test_url_and_token_resolution() -> None:
    endpoint = Endpoint.resolve(None, None, {"HTTPQUEUE_URL": "https://hq.example/", "HTTPQUEUE_TOKEN": "s"})
    assert endpoint.url == "https://hq.example" and endpoint.headers["Authorization"] == "Bearer s"
    assert "Authorization" not in Endpoint.resolve("http://a", "", {"HTTPQUEUE_TOKEN": "s"}).headers
    assert Endpoint.resolve(None, None, {}).url == "http://127.0.0.1:2356"


def test_readiness_from_either_kind_of_503() -> None:
    from httpqueue.client import Readiness

    not_ready = Readiness.from_json({"code": 503, "status": "not ready", "problems": ["no worker"], "workers": 0})
    assert (not_ready.ready, not_ready.problems) == (False, ["no worker"])
    store_away = Readiness.from_json({"code": 503, "error": "the task store (Redis) is unavailable"})
    assert (store_away.ready, store_away.problems) == (False, ["the task store (Redis) is unavailable"])
    assert Readiness.from_json({"status": "ready"}).ready
