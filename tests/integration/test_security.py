"""Security end to end: SSRF at create and at delivery, bearer tokens, signed callbacks, no secrets in logs."""
from __future__ import annotations

import json
import logging
import typing as t

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from httpqueue.worker import attempts as tasks
from httpqueue.api import create_app
from httpqueue.config import Settings
from httpqueue.clock import now_ms
from httpqueue.context import Context
from httpqueue.exceptions import ConfigError, UnsafeCallbackError
from httpqueue.delivery import aio
from httpqueue.delivery.signing import new_secret
from httpqueue.delivery.ssrf import CallbackPolicy
from httpqueue.store import NewTask
from tests.support.processes import start_api
from tests.support.receiver import Receiver

SECRET_OLD, SECRET_NEW = new_secret(), new_secret()
TOKEN = "tok-" + "s3cr3t" * 6


# -- SSRF

@pytest.mark.parametrize("callback", ["http://2130706433/", "http://0177.0.0.1:80/", "http://[::ffff:127.0.0.1]/",
                                      "http://localhost:9/", "http://169.254.169.254/latest/meta-data"])
def test_create_refuses_internal_callbacks_by_default(settings: Settings, callback: str) -> None:
    client = create_app(settings.replace(callback_allow="")).test_client()
    response = client.post("/create", json={"topic": "t", "delay": 1, "callback": callback})
    assert response.status_code == 400
    body = response.get_json()
    # marshmallow's URL check already refuses some forms (octal, bracketed mapped IPv6); the guard the rest
    assert "callback" in body["fields"] and ("refused" in body["error"] or "Not a valid URL" in body["error"])


def test_a_batch_checks_each_callback_and_refuses_each_internal_one(settings: Settings, topic: str) -> None:
    """A batch checks a URL once it was allowed (it repeats its callback): a refused one stays refused."""
    client = create_app(settings.replace(callback_allow=("127.0.0.2",))).test_client()
    good, bad = "http://127.0.0.2:9/hook", "http://127.0.0.1:9/"  # allowed loopback, and refused
    items = [{"topic": topic, "delay": 86400, "callback": url} for url in (good, bad, good, bad)]
    items.append({"topic": topic, "delay": 86400, "callback": good, "failure_callback": bad})
    response = client.post("/v1/tasks/batch", json={"tasks": items})
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [set(r) for r in results] == [{"id"}, {"error", "fields"}, {"id"}, {"error", "fields"}, {"error", "fields"}]
    assert "callback" in results[1]["fields"] and "callback" in results[3]["fields"]
    assert "failure_callback" in results[4]["fields"]


def test_delivery_checks_the_address_again_when_it_connects(settings: Settings, receiver: Receiver,
                                                             topic: str) -> None:
    """A task stored while its host was allowed is refused by a worker whose policy no longer allows it."""
    strict = Context(settings.replace(callback_allow=""))
    path = f"/{topic}"
    created = strict.store.create(NewTask(topic, receiver.url(path), "x", now_ms() + 3_600_000, 0), now_ms())
    result = tasks.attempt(strict, strict.store.get(created.task_id))
    assert result.outcome == "failed" and result.error.startswith("refused")
    assert [r for r in receiver.requests if r.path == path] == []


def test_the_callback_client_refuses_loopback_and_follows_no_proxy(receiver: Receiver,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would bypass the check if it were used
    before = len(receiver.requests)
    refusing = aio.CallbackClient(CallbackPolicy())
    opened = aio.CallbackClient(CallbackPolicy.from_strings(["127.0.0.1"]))
    try:
        with pytest.raises(UnsafeCallbackError, match="loopback"):
            aio.run(refusing.exchange("POST", receiver.url("/ssrf"), b"{}", {}, 2))
        assert len(receiver.requests) == before
        status, body, _ = aio.run(opened.exchange("POST", receiver.url("/ssrf"), b"{}", {}, 2))
        assert status == 200 and json.loads(body) == {"code": 100}
    finally:
        aio.run(refusing.close())
        aio.run(opened.close())


def test_redirects_are_not_followed_by_default(settings: Settings, receiver: Receiver, topic: str) -> None:
    from tests.support.receiver import Answer

    path = f"/{topic}"
    receiver.script(path, Answer(status=302, headers={"Location": "http://169.254.169.254/"}, body="moved"))
    ctx = Context(settings)
    created = ctx.store.create(NewTask(topic, receiver.url(path), "x", now_ms() + 3_600_000, 0), now_ms())
    result = tasks.attempt(ctx, ctx.store.get(created.task_id))
    assert result.outcome == "failed" and "302" in result.error


def test_followed_redirects_are_checked_hop_by_hop(settings: Settings, receiver: Receiver, topic: str) -> None:
    from tests.support.receiver import Answer

    path = f"/{topic}"
    ctx = Context(settings.replace(callback_allow="127.0.0.1", follow_redirects=True))

    def attempt_once() -> tasks.Result:
        created = ctx.store.create(NewTask(topic, receiver.url(path), "x", now_ms() + 3_600_000, 0), now_ms())
        return tasks.attempt(ctx, ctx.store.get(created.task_id))

    receiver.script(path, Answer(status=307, headers={"Location": receiver.url(path + "/moved")}, body=""))
    assert attempt_once().outcome == "succeeded"
    assert [r.path for r in receiver.requests if r.path.startswith(path)] == [path, path + "/moved"]
    # a hop to an address the policy does not allow (loopback, but not 127.0.0.1) is refused before connecting
    receiver.script(path, Answer(status=307, headers={"Location": f"http://127.0.0.2:{receiver.port}/x"}, body=""))
    result = attempt_once()
    assert result.outcome == "failed" and result.error.startswith("refused"), result.error


# -- authentication

@pytest.fixture(scope="module")
def locked(settings: Settings) -> t.Any:
    return create_app(settings.replace(api_tokens=(TOKEN, "second-token"))).test_client()


@pytest.mark.parametrize("method, path", [("post", "/create"), ("post", "/query"), ("get", "/v1/tasks"),
                                          ("get", "/v1/stats"), ("get", "/openapi.json"), ("get", "/ready")])
def test_every_endpoint_but_health_needs_a_token(locked: t.Any, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        response = getattr(locked, method)(path, json={}, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in response.get_json()["error"]


def test_any_configured_token_opens_the_api(locked: t.Any) -> None:
    assert locked.get("/health").status_code == 200
    for token in (TOKEN, "second-token"):
        response = locked.post("/create", json={"topic": "a", "delay": 3600, "callback": "http://127.0.0.1:9/"},
                               headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


def test_gunicorn_api_enforces_tokens(env: dict[str, str]) -> None:
    from httpqueue.embedded import free_port

    port = free_port()
    api = start_api({**env, "HTTPQUEUE_API_TOKENS": TOKEN}, port, name="api-auth")
    try:
        url = f"http://127.0.0.1:{port}"
        assert requests.post(f"{url}/query", json={"id": "x"}, timeout=5).status_code == 401
        answer = requests.post(f"{url}/query", json={"id": "x"}, headers={"Authorization": f"Bearer {TOKEN}"},
                               timeout=5)
        assert answer.status_code == 404
        assert TOKEN not in api.output()
    finally:
        api.stop()


# -- signed callbacks

def test_callbacks_are_signed_and_verify_with_standardwebhooks(settings: Settings, receiver: Receiver,
                                                               topic: str) -> None:
    ctx = Context(settings.replace(signing_secrets=(SECRET_NEW, SECRET_OLD)))
    path = f"/{topic}"
    created = ctx.store.create(NewTask(topic, receiver.url(path), {"a": [1, "é"]}, now_ms() + 3_600_000, 0),
                               now_ms())
    result = tasks.attempt(ctx, ctx.store.get(created.task_id))
    assert result.outcome == "succeeded"
    [request] = [r for r in receiver.requests if r.path == path]
    assert request.headers["webhook-id"] == created.task_id
    for secret in (SECRET_NEW, SECRET_OLD):  # either side of a rotation verifies
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload == {"id": created.task_id, "topic": topic, "content": {"a": [1, "é"]}}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_NEW).verify(request.body.replace(b"1", b"2"), request.headers)


@pytest.mark.parametrize("bad", ["plain-text", "whsec_", "whsec_c2hvcnQ="])
def test_malformed_signing_secrets_are_refused_at_startup(bad: str) -> None:
    with pytest.raises(ConfigError, match="SIGNING_SECRETS"):
        Settings.load({"signing_secrets": bad}, environ={})


# -- secrets stay out of logs and answers

def test_secrets_never_appear_in_logs_or_query(settings: Settings, receiver: Receiver, topic: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="httpqueue")
    secured = settings.replace(api_tokens=(TOKEN,), signing_secrets=(SECRET_NEW,))
    client = create_app(secured).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    callback = receiver.url(f"/{topic}").replace("http://", "http://user:pa55word@")
    created = client.post("/create", json={"topic": topic, "delay": 3600, "callback": callback}, headers=auth)
    task_id = created.get_json()["id"]
    client.post("/create", json={"topic": topic, "delay": 3600, "callback": "x"}, headers=auth)
    client.post("/query", json={"id": task_id}, headers={"Authorization": "Bearer nope"})
    ctx = Context(secured)
    tasks.record(ctx, topic, [tasks.attempt(ctx, ctx.store.get(task_id))], lambda *_: None)
    shown = client.post("/query", json={"id": task_id}, headers=auth).get_data(as_text=True)
    from httpqueue.logs import JsonFormatter, TextFormatter

    logged = "\n".join(f.format(r) for r in caplog.records for f in (JsonFormatter(), TextFormatter()))
    for secret in (TOKEN, SECRET_NEW, SECRET_NEW.removeprefix("whsec_"), "pa55word"):
        assert secret not in logged and secret not in shown
    assert "user:***@" in shown and task_id in logged
