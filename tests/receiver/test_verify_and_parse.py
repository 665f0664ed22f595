"""The receiver's pure parts: signatures checked as the ``standardwebhooks`` package checks them, parsing,
replies, and the deduplication stores (Redis: the suite's real one)."""
from __future__ import annotations

import datetime
import json
import time
import typing as t
import uuid

import pytest
import redis
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from httpqueue.delivery.http import callback_headers
from httpqueue.delivery.signing import WebhookSigner, new_secret
from httpqueue.receiver import (
    Callback, Claim, InvalidSignature, MalformedCallback, MemoryDedupStore, Receiver, RedisDedupStore, Reply,
    SlowDown, StaleTimestamp, Verifier, parse,
)
from httpqueue.receiver import callback as callback_module
from httpqueue.store.records import TaskRecord
from httpqueue.states import State

SECRET, OTHER = new_secret(), new_secret()
BODY = json.dumps({"id": "t-1", "topic": "order", "content": {"n": 1}}).encode()


def signed(secret: str, body: bytes = BODY, msg_id: str = "t-1", at: float | None = None) -> dict[str, str]:
    """Headers signed by the ``standardwebhooks`` package itself."""
    stamp = datetime.datetime.fromtimestamp(time.time() if at is None else at, datetime.timezone.utc)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, stamp, body.decode())}


def both_verdicts(headers: dict[str, str], body: bytes, secret: str = SECRET) -> tuple[bool, bool]:
    """(the package accepts, this receiver accepts) for one request."""
    try:
        Webhook(secret).verify(body, headers)
        package = True
    except WebhookVerificationError:
        package = False
    try:
        Verifier([secret]).verify(headers, body)
        ours = True
    except InvalidSignature:
        ours = False
    return package, ours


@pytest.mark.parametrize("case", ["valid", "other secret", "tampered body", "old", "future", "no signature",
                                  "two signatures", "v2 only", "upper-case headers"])
def test_verifier_agrees_with_the_standardwebhooks_package(case: str) -> None:
    body, headers = BODY, signed(SECRET)
    expected = True
    if case == "other secret":
        headers, expected = signed(OTHER), False
    elif case == "tampered body":
        body, expected = BODY.replace(b"1", b"2"), False
    elif case == "old":
        headers, expected = signed(SECRET, at=time.time() - 400), False
    elif case == "future":
        headers, expected = signed(SECRET, at=time.time() + 400), False
    elif case == "no signature":
        headers, expected = {"webhook-id": "t-1"}, False
    elif case == "two signatures":  # a rotation: httpqueue signs with both secrets
        headers["webhook-signature"] = signed(OTHER)["webhook-signature"] + " " + headers["webhook-signature"]
    elif case == "v2 only":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
        expected = False
    elif case == "upper-case headers":
        headers = {k.title(): v for k, v in headers.items()}
    assert both_verdicts(headers, body) == (expected, expected)


def test_httpqueues_own_signer_verifies_with_either_secret_of_a_rotation() -> None:
    stamp = int(time.time())
    headers = WebhookSigner([SECRET, OTHER]).headers("t-1", stamp, BODY)
    Verifier([OTHER]).verify(headers, BODY)
    Verifier(f"{new_secret()},{SECRET}").verify(headers, BODY)
    with pytest.raises(InvalidSignature):
        Verifier([new_secret()]).verify(headers, BODY)
    with pytest.raises(StaleTimestamp):
        Verifier([SECRET], tolerance=10).verify(headers, BODY, now=stamp + 11)


def test_parse_reads_what_httpqueue_sends() -> None:
    record = TaskRecord(id="t-1", topic="bestellung-ü", callback="http://x/", content={"n": 1}, execute_ms=1_000,
                        created_ms=0, max_retry=0, state=State.DELIVERING, due_ms=1_500, has_retry=0, attempts=2,
                        gen=1)
    body = json.dumps({"id": "t-1", "topic": record.topic, "content": {"n": 1}}).encode()
    headers = callback_headers(record, 3, body, None)
    callback = parse(headers, body)
    assert (callback.id, callback.topic, callback.content, callback.attempt, callback.due_ms) == \
        ("t-1", "bestellung-ü", {"n": 1}, 3, 1_500)
    bodyless = parse({k: v for k, v in headers.items() if k != "Content-Type"}, b"")
    assert (bodyless.id, bodyless.topic, bodyless.content) == ("t-1", "bestellung-ü", None)
    for name in ("ID_HEADER", "ATTEMPT_HEADER", "TOPIC_HEADER", "DUE_HEADER"):
        assert getattr(callback_module, name) in {h.lower() for h in headers}, name


@pytest.mark.parametrize("headers, body", [({}, b"[1]"), ({}, b"{not json"), ({}, b"{}"),
                                           ({"X-Httpqueue-Id": "a"}, b'{"id": "b"}'),
                                           ({"X-Httpqueue-Id": "a", "X-Httpqueue-Attempt": "x"}, b"")])
def test_parse_refuses_what_is_not_a_callback(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(MalformedCallback):
        parse(headers, body)


def test_replies() -> None:
    assert (Reply.done().status, Reply.done().body) == (200, {"code": 100})
    slow = Reply.slow_down(2.5)
    assert slow.body == {"code": 101} and slow.headers == {"Retry-After": "3"}
    assert Reply.slow_down().headers == {}


def test_receiver_runs_a_handler_once_per_task_and_again_after_a_failure() -> None:
    receiver = Receiver([SECRET])
    seen: list[Callback] = []
    failures = [RuntimeError("down")]

    def handler(callback: Callback) -> None:
        seen.append(callback)
        if failures:
            raise failures.pop()

    with pytest.raises(RuntimeError):
        receiver.handle(signed(SECRET), BODY, handler)
    assert receiver.handle(signed(SECRET), BODY, handler) == Reply.done()
    assert receiver.handle(signed(SECRET), BODY, handler) == Reply.done()
    assert len(seen) == 2
    assert receiver.handle(signed(OTHER), BODY, handler).status == 401 and len(seen) == 2


def test_slow_down_releases_the_claim() -> None:
    receiver, calls = Receiver(None), []

    def handler(callback: Callback) -> None:
        calls.append(callback.attempt)
        if len(calls) == 1:
            raise SlowDown(7)

    assert receiver.handle({}, BODY, handler) == Reply.slow_down(7)
    assert receiver.handle({}, BODY, handler) == Reply.done() and calls == [1, 1]
    with pytest.raises(ValueError):
        Receiver([])
    with pytest.raises(ValueError, match="HTTPQUEUE_SIGNING_SECRETS"):
        Receiver.from_env({})


def test_memory_store_claims_lapse() -> None:
    now = [0.0]
    store = MemoryDedupStore(running_ttl=10, done_ttl=100, clock=lambda: now[0])
    assert [store.claim("a"), store.claim("a")] == [Claim.NEW, Claim.RUNNING]
    now[0] = 11  # the claim of a crashed handler lapses
    assert store.claim("a") is Claim.NEW
    store.finish("a")
    assert store.claim("a") is Claim.DONE
    now[0] = 112
    assert store.claim("a") is Claim.NEW


def test_redis_store(redis_server: t.Any) -> None:
    client = redis.Redis.from_url(redis_server.url)
    store = RedisDedupStore(client, prefix=f"recv-{uuid.uuid4().hex[:8]}:", running_ttl=30, done_ttl=60)
    assert [store.claim("a"), store.claim("a")] == [Claim.NEW, Claim.RUNNING]
    store.release("a")
    assert store.claim("a") is Claim.NEW
    store.finish("a")
    assert store.claim("a") is Claim.DONE
    assert 0 < client.pttl(store.prefix + "a") <= 60_000


def test_flask_blueprint() -> None:
    from flask import Flask

    from httpqueue.receiver.flask import blueprint

    seen: list[str] = []
    app = Flask("blueprint-test")
    app.register_blueprint(blueprint(Receiver([SECRET]), lambda cb: seen.append(cb.id), "/in"), url_prefix="/hooks")
    answers = [app.test_client().post("/hooks/in", data=BODY, headers=signed(SECRET)) for _ in range(2)]
    assert [(a.status_code, a.json) for a in answers] == [(200, {"code": 100})] * 2 and seen == ["t-1"]
    assert app.test_client().post("/hooks/in", data=BODY, headers=signed(OTHER)).status_code == 401
