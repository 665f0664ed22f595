"""Structurally hostile request bodies, on every JSON endpoint: a clear 400 (or 413), never a 500, nothing stored.

``test_fuzz.py`` varies field *values*; this file attacks the *shape* of the
body: nesting 10,000 levels deep, numbers beyond a float (``1e400``, 5,000
digits), NaN and Infinity, a key twice in one object, bytes that are not
UTF-8, lone UTF-16 surrogates, tens of thousands of keys, megabyte strings and
keys, and bodies that are an array, a string or a number instead of an object.

Each attack is embedded in a body that is otherwise valid for the endpoint
(checked by :func:`test_the_base_bodies_are_valid`), so the 400 is the
attack's and its message must name it. "Nothing stored" is checked on what
the endpoint could write for the test's own topic and ids: its tasks (the
statistics hashes), its topic's keys and the schedule it names. A Redis-wide
key count would also see the session worker's own bookkeeping when the whole
suite runs.
"""
from __future__ import annotations

import dataclasses
import json
import typing as t
import uuid

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from httpqueue.api.base import nesting_depth
from httpqueue.api.schemas import MAX_BODY_DEPTH, MAX_CONTENT_DEPTH
from httpqueue.config import Settings
from httpqueue.store.keys import Keys

NOWHERE = "http://127.0.0.1:9/"
"""A callback for tasks that must never be delivered (the discard port; nothing listens)."""

MAX_ANSWER = 16_384
"""An error answer is a message, not an echo: a 1 MB key or 50,000 unknown fields are not repeated back."""

HOSTILE = hypothesis_settings(max_examples=25, deadline=None, database=None,
                              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])

Path = tuple[t.Union[str, int], ...]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A JSON endpoint, a valid body for it, and where in that body an attack can go."""

    method: str
    template: str  # as /openapi.json names it
    base: t.Callable[[str, str], dict[str, t.Any]]  # (topic, unique id) -> a valid body
    slots: tuple[Path, ...]  # values to replace; the first is where any JSON value is valid (if ``free``)
    free: bool = False  # the first slot takes any JSON value (a task's content)
    item_slots: int = 0  # the last this many slots are inside a batch item: a wrong value there fails the item

    def typed_slots(self) -> tuple[Path, ...]:
        """Slots where a value of the wrong type or size makes the whole request a 400."""
        return self.slots[1 if self.free else 0:len(self.slots) - self.item_slots]

    def path(self, topic: str) -> str:
        return self.template.replace("{topic}", topic)

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def _task(topic: str, uid: str) -> dict[str, t.Any]:
    return {"topic": topic, "delay": 3600, "retry": 1, "callback": NOWHERE, "content": {"n": 1},
            "retry_policy": {"base": 2}}


ENDPOINTS = [
    Endpoint("POST", "/create", _task, (("content",), ("topic",), ("delay",), ("retry_policy", "base")), free=True),
    Endpoint("POST", "/v1/tasks", _task, (("content",), ("callback",), ("retry",)), free=True),
    Endpoint("POST", "/v1/tasks/batch", lambda topic, uid: {"tasks": [_task(topic, uid)]},
             (("tasks", 0, "content"), ("tasks",), ("tasks", 0, "delay")), free=True, item_slots=1),
    Endpoint("POST", "/delete", lambda topic, uid: {"id": uid}, (("id",),)),
    Endpoint("POST", "/query", lambda topic, uid: {"id": uid}, (("id",),)),
    Endpoint("POST", "/v1/schedules",
             lambda topic, uid: {"id": uid, "cron": "0 9 * * *", "timezone": "UTC",
                                 "task": {"topic": topic, "callback": NOWHERE, "content": [1]}},
             (("task", "content"), ("cron",), ("task", "retry")), free=True),
    Endpoint("PATCH", "/v1/topics/{topic}", lambda topic, uid: {"rate_limit": 5, "concurrency": 2},
             (("rate_limit",), ("concurrency",))),
    Endpoint("POST", "/v1/topics/{topic}/dead-letters/replay", lambda topic, uid: {"ids": [uid]},
             (("ids", 0), ("ids",))),
    Endpoint("POST", "/v1/topics/{topic}/dead-letters/delete", lambda topic, uid: {"ids": [uid]},
             (("ids", 0), ("ids",))),
]


# -- building bodies --------------------------------------------------------------------------------------------

MARK = "\u0000hostile\u0000"
MARK_TEXT = json.dumps(MARK).encode()


def _replace(doc: t.Any, path: Path, value: t.Any) -> t.Any:
    """A copy of ``doc`` with the value at ``path`` replaced."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, list):
        return [_replace(v, rest, value) if i == head else v for i, v in enumerate(doc)]
    return {**doc, head: _replace(doc.get(head), rest, value)}  # an absent key is added


def embed(base: dict[str, t.Any], path: Path, raw: bytes) -> bytes:
    """``base`` as JSON with the value at ``path`` replaced by the raw bytes ``raw`` (which need not be JSON)."""
    return json.dumps(_replace(base, path, MARK)).encode().replace(MARK_TEXT, raw)


def embed_members(base: dict[str, t.Any], path: Path, members: bytes) -> bytes:
    """``base`` as JSON with raw ``members`` (``"k": v, ...``) added to the object that holds ``path``."""
    parent = path[:-1]
    while parent and not isinstance(_get(base, parent), dict):
        parent = parent[:-1]
    text = json.dumps(_get(base, parent)).encode()
    inner = text[1:-1].strip()
    return embed(base, parent, b"{" + inner + (b", " if inner else b"") + members + b"}")


def _get(doc: t.Any, path: Path) -> t.Any:
    for step in path:
        doc = doc[step]
    return doc


# -- what the endpoint could have stored ------------------------------------------------------------------------

def footprint(rclient: t.Any, settings: Settings, topic: str, uid: str) -> tuple[int, int, bool, bool]:
    """Tasks of ``topic``, keys under ``topic``'s hash tag, schedule ``uid``, ``topic`` among configured topics."""
    keys = Keys(settings.key_prefix, settings.shards)
    tasks = sum(int(v) for shard in range(keys.shards) for f, v in rclient.hgetall(keys.stats(shard)).items()
                if f.endswith(f"|{topic}"))
    topic_keys = sum(1 for _ in rclient.scan_iter(match=f"{keys.topic_tag(topic)}:*", count=1000))
    return (tasks, topic_keys, bool(rclient.hexists(keys.schedule_defs(), uid)),
            bool(rclient.sismember(keys.topics(), topic)))


def refused(response: t.Any, *words: str, statuses: t.Collection[int] = (400,)) -> dict[str, t.Any]:
    """Assert a clear refusal: one of ``statuses``, a short JSON error naming ``words``, no traceback."""
    text = response.get_data(as_text=True)
    assert response.status_code in statuses, (response.status_code, text[:500])
    assert len(response.data) < MAX_ANSWER, (len(response.data), text[:300])
    assert "Traceback" not in text
    doc = response.get_json()
    assert isinstance(doc, dict) and doc["code"] == response.status_code and doc["error"], text[:500]
    for word in words:
        assert word.lower() in doc["error"].lower(), (word, doc["error"])
    return t.cast(dict[str, t.Any], doc)


def send(client: t.Any, endpoint: Endpoint, topic: str, data: bytes) -> t.Any:
    return client.open(endpoint.path(topic), method=endpoint.method, data=data, content_type="application/json")


@pytest.fixture
def names() -> tuple[str, str]:
    """A topic and an id of the test's own (hypothesis reuses them across examples, which is fine: nothing is stored)."""
    return f"hostile-{uuid.uuid4().hex[:10]}", f"h{uuid.uuid4().hex[:12]}"


# -- the endpoints are all here, and their base bodies are valid ------------------------------------------------

def test_every_json_endpoint_is_attacked(client: t.Any) -> None:
    """Every operation of the OpenAPI document that takes a JSON body is in :data:`ENDPOINTS`."""
    paths = client.get("/openapi.json").get_json()["paths"]
    documented = {f"{method.upper()} {path}" for path, item in paths.items() for method, op in item.items()
                  if isinstance(op, dict) and "requestBody" in op}
    assert documented == {str(e) for e in ENDPOINTS}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_the_base_bodies_are_valid(client: t.Any, endpoint: Endpoint, names: tuple[str, str]) -> None:
    """Unattacked, each base body passes validation, so a 400 below is the attack's doing."""
    topic, uid = names
    response = client.open(endpoint.path(topic), method=endpoint.method, json=endpoint.base(*names))
    assert response.status_code != 400, response.get_data(as_text=True)
    assert response.status_code < 500, response.get_data(as_text=True)
    client.post(f"/v1/topics/{topic}/purge")
    client.delete(f"/v1/schedules/{uid}")


# -- the named attacks, one by one ------------------------------------------------------------------------------

def _deep_arrays(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def _deep_objects(levels: int) -> bytes:
    return b'{"a":' * levels + b"0" + b"}" * levels


WHOLE_BODY: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("10000 nested arrays", _deep_arrays(10_000), ("10000 levels deep", f"at most {MAX_BODY_DEPTH}")),
    ("10000 nested objects", _deep_objects(10_000), ("10000 levels deep", f"at most {MAX_BODY_DEPTH}")),
    ("an array", b"[1, 2]", ("must be a JSON object", "not an array")),
    ("a string", b'"hello"', ("must be a JSON object", "not a string")),
    ("a number", b"42", ("must be a JSON object", "not a number")),
    ("true", b"true", ("must be a JSON object", "not a boolean")),
    ("null", b"null", ("must be a JSON object", "not null")),
    ("empty", b"  ", ("empty",)),
    ("not JSON", b"{topic: order}", ("not valid JSON",)),
    ("truncated", b'{"topic": "or', ("not valid JSON",)),
    ("latin-1", '{"topic": "café"}'.encode("latin-1"), ("not valid UTF-8", "0xe9")),
    ("bare 0xff", b"\xff\xfe\xfd", ("not valid",)),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize("name, data, words", WHOLE_BODY, ids=[case[0] for case in WHOLE_BODY])
def test_a_hostile_whole_body(client: t.Any, rclient: t.Any, settings: Settings, endpoint: Endpoint,
                              names: tuple[str, str], name: str, data: bytes, words: tuple[str, ...]) -> None:
    topic, uid = names
    before = footprint(rclient, settings, topic, uid)
    refused(send(client, endpoint, topic, data), *words)
    assert footprint(rclient, settings, topic, uid) == before


VALUES: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("1e400", b"1e400", ("1e400", "too large", "1.8e308")),
    ("-1e400", b"-1e400", ("-1e400", "too large")),
    ("10**5000", b"1" + b"0" * 5000, ("5001 digits", "too large")),
    ("-(10**400)", b"-1" + b"0" * 400, ("401 digits", "too large")),
    ("NaN", b"NaN", ("NaN", "not a JSON number")),
    ("Infinity", b"Infinity", ("Infinity", "not a JSON number")),
    ("-Infinity", b"-Infinity", ("-Infinity", "not a JSON number")),
    ("a lone high surrogate", b'"ab\\ud800cd"', ("lone UTF-16 surrogate",)),
    ("a lone low surrogate", b'"\\udc00"', ("lone UTF-16 surrogate",)),
    ("invalid UTF-8 in a string", b'"ab\xc3\x28"', ("not valid UTF-8", "0xc3")),
    ("an encoded surrogate", b'"\xed\xa0\x80"', ("not valid UTF-8", "0xed")),
    ("nested 40 deep", _deep_arrays(40), ("levels deep", f"at most {MAX_BODY_DEPTH}")),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize("name, raw, words", VALUES, ids=[case[0] for case in VALUES])
def test_a_hostile_value_in_a_valid_body(client: t.Any, rclient: t.Any, settings: Settings, endpoint: Endpoint,
                                         names: tuple[str, str], name: str, raw: bytes,
                                         words: tuple[str, ...]) -> None:
    """The attack in each slot of an otherwise valid body; the message names it whatever the field."""
    topic, uid = names
    before = footprint(rclient, settings, topic, uid)
    for slot in endpoint.slots:
        refused(send(client, endpoint, topic, embed(endpoint.base(topic, uid), slot, raw)), *words)
    assert footprint(rclient, settings, topic, uid) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_a_key_twice_is_refused_naming_it(client: t.Any, rclient: t.Any, settings: Settings, endpoint: Endpoint,
                                          names: tuple[str, str]) -> None:
    """``{"delay": 5, "delay": 86400}``: which one counts depends on the reader, so neither does."""
    topic, uid = names
    before = footprint(rclient, settings, topic, uid)
    for slot in endpoint.slots:
        base = endpoint.base(topic, uid)
        holder = slot[:-1]
        while not isinstance(_get(base, holder), dict):
            holder = holder[:-1]
        key = next(iter(_get(base, holder)))  # a key the object has: the member added repeats it
        data = embed_members(base, holder + (key,), json.dumps(key).encode() + b": 1")
        doc = refused(send(client, endpoint, topic, data), f'"{key}" twice')
        assert "send each key once" in doc["error"]
    assert footprint(rclient, settings, topic, uid) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_fifty_thousand_unknown_keys_get_a_short_answer(client: t.Any, rclient: t.Any, settings: Settings,
                                                       endpoint: Endpoint, names: tuple[str, str]) -> None:
    topic, uid = names
    before = footprint(rclient, settings, topic, uid)
    members = b", ".join(b'"k%d": %d' % (i, i) for i in range(50_000))
    data = embed_members(endpoint.base(topic, uid), (next(iter(endpoint.base(topic, uid))),), members)
    doc = refused(send(client, endpoint, topic, data), "Unknown field", "more fields")
    assert len(doc["fields"]) <= 20 and doc["more_fields"] >= 49_980
    assert footprint(rclient, settings, topic, uid) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_a_megabyte_key_is_not_echoed(client: t.Any, rclient: t.Any, settings: Settings, endpoint: Endpoint,
                                      names: tuple[str, str]) -> None:
    topic, uid = names
    before = footprint(rclient, settings, topic, uid)
    data = embed_members(endpoint.base(topic, uid), (next(iter(endpoint.base(topic, uid))),),
                         b'"' + b"k" * 1_100_000 + b'": 1')
    refused(send(client, endpoint, topic, data), "larger than", statuses=(413,))  # over max_body: 413
    data = embed_members(endpoint.base(topic, uid), (next(iter(endpoint.base(topic, uid))),),
                         b'"' + b"k" * 900_000 + b'": 1')
    refused(send(client, endpoint, topic, data), "Unknown field")
    assert footprint(rclient, settings, topic, uid) == before


# -- the depth of content ---------------------------------------------------------------------------------------

CONTENT_ENDPOINTS = [e for e in ENDPOINTS if e.free]


@pytest.mark.parametrize("endpoint", CONTENT_ENDPOINTS, ids=str)
def test_content_may_nest_32_levels_and_no_more(client: t.Any, rclient: t.Any, settings: Settings,
                                                endpoint: Endpoint, names: tuple[str, str]) -> None:
    """Content of exactly :data:`MAX_CONTENT_DEPTH` levels is stored; one more is refused, saying the limit."""
    topic, uid = names
    slot = endpoint.slots[0]
    deepest = embed(endpoint.base(topic, uid), slot, _deep_objects(MAX_CONTENT_DEPTH))
    assert nesting_depth(deepest.decode()) <= MAX_BODY_DEPTH  # the body limit leaves room for it
    response = send(client, endpoint, topic, deepest)
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    if endpoint.template == "/v1/tasks/batch":
        assert "id" in response.get_json()["results"][0], response.get_json()
    client.post(f"/v1/topics/{topic}/purge")
    client.delete(f"/v1/schedules/{uid}")

    before = footprint(rclient, settings, topic, uid)
    response = send(client, endpoint, topic, embed(endpoint.base(topic, uid), slot,
                                                   _deep_arrays(MAX_CONTENT_DEPTH + 1)))
    doc = refused(response, "levels deep", f"content at most {MAX_CONTENT_DEPTH}"
                  if endpoint.template == "/v1/tasks/batch" else f"at most {MAX_CONTENT_DEPTH} are accepted")
    if endpoint.template != "/v1/tasks/batch":  # the schema's refusal, naming the field and what to do instead
        assert f"{MAX_CONTENT_DEPTH + 1} levels deep" in doc["error"] and "JSON string" in doc["error"]
        assert "content" in json.dumps(doc["fields"])
    # in a batch, the item's content is 3 levels down: the body's own limit refuses it first
    assert footprint(rclient, settings, topic, uid) == before


def test_the_openapi_document_states_the_content_depth(client: t.Any) -> None:
    content = client.get("/openapi.json").get_json()["components"]["schemas"]["CreateTask"]["properties"]["content"]
    assert f"at most {MAX_CONTENT_DEPTH} levels deep" in content["description"]


# -- values that reached the code behind the schema (each was a 500) -------------------------------------------

def test_a_cron_that_never_ticks_is_a_400(client: t.Any, rclient: t.Any, settings: Settings,
                                          names: tuple[str, str]) -> None:
    """``0 0 31 2 *`` is well-formed, but 31 February never comes: croniter raised when the save asked for a tick."""
    topic, uid = names
    before = footprint(rclient, settings, topic, uid)
    response = client.post("/v1/schedules", json={"id": uid, "cron": "0 0 31 2 *",
                                                  "task": {"topic": topic, "callback": NOWHERE}})
    doc = refused(response, "cron", "never")
    assert "cron" in doc["fields"]
    assert footprint(rclient, settings, topic, uid) == before


@pytest.mark.parametrize("field, value, words", [
    ("delay", 10 ** 400, "finite number"),
    ("retry", -(10 ** 400), "finite number"),
    ("timeout", 10 ** 309, "finite number"),
    ("execute_at", 10 ** 400, "Unix seconds"),
    ("execute_at", "1969-12-31T23:59:59Z", "before 1970"),
])
def test_the_schema_refuses_numbers_beyond_a_float_on_its_own(field: str, value: t.Any, words: str) -> None:
    """The body parser stops such numbers first; the schema must not raise OverflowError for other callers."""
    from marshmallow import ValidationError

    from httpqueue.api.schemas import CreateTaskSchema

    task = {**_task("t", "u"), field: value}
    if field == "execute_at":
        del task["delay"]
    with pytest.raises(ValidationError) as refusal:
        CreateTaskSchema().load(task)
    assert words in json.dumps(refusal.value.normalized_messages()[field])


# -- generated attacks ------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-2 ** 60, 2 ** 60) | st.floats(allow_nan=False,
                                                                                     allow_infinity=False)
json_non_objects = st.one_of(
    json_scalars, st.text(max_size=30),
    st.lists(st.recursive(json_scalars | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3),
                          max_leaves=8), max_size=4))


@st.composite
def attacks(draw: st.DrawFn, endpoint: Endpoint) -> tuple[str, Path, bytes, tuple[str, ...], tuple[int, ...]]:
    """(kind, slot, raw bytes, words the message must have, statuses allowed) for one generated attack."""
    kind = draw(st.sampled_from(["deep", "big int", "big float", "constant", "surrogate", "bad utf-8",
                                 "long string", "not an object"]))
    slot = draw(st.sampled_from(endpoint.typed_slots() if kind == "long string" else endpoint.slots))
    if kind == "deep":
        levels = draw(st.integers(MAX_BODY_DEPTH + 1, 20_000))
        opener = draw(st.sampled_from([b"[", b'{"k":', b'[{"k":']))
        closer = {b"[": b"]", b'{"k":': b"}", b'[{"k":': b"}]"}[opener]
        count = -(-levels // (2 if opener == b'[{"k":' else 1))
        return kind, slot, opener * count + b"0" * (opener != b"[") + closer * count, ("levels deep",), (400,)
    if kind == "big int":
        digits = draw(st.integers(310, 8000))
        sign = draw(st.sampled_from([b"", b"-"]))
        return kind, slot, sign + b"9" * digits, (f"{digits} digits", "too large"), (400,)
    if kind == "big float":
        exponent = draw(st.integers(309, 10 ** 6))
        mantissa = draw(st.sampled_from([b"1", b"9.99", b"-2.5", b"1.0"]))
        return kind, slot, mantissa + b"e" + str(exponent).encode(), ("too large",), (400,)
    if kind == "constant":
        name = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return kind, slot, name.encode(), (name, "not a JSON number"), (400,)
    if kind == "surrogate":
        code = draw(st.integers(0xD800, 0xDFFF))
        text = draw(st.text(alphabet="abc xyz", max_size=5))
        tail = "z" if code < 0xDC00 else ""  # a high surrogate followed by no low one
        return kind, slot, f'"{text}\\u{code:04x}{tail}"'.encode(), ("lone UTF-16 surrogate",), (400,)
    if kind == "bad utf-8":
        bad = draw(st.sampled_from([b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80"]))
        return kind, slot, b'"a' + bad + b'b"', ("not valid UTF-8",), (400,)
    if kind == "long string":
        size = draw(st.integers(10_000, 1_100_000))
        return kind, slot, json.dumps("x" * size).encode(), (), (400, 413)
    value = draw(json_non_objects)
    return kind, (), json.dumps(value).encode(), ("must be a JSON object",), (400,)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_generated_structural_attacks(client: t.Any, rclient: t.Any, settings: Settings, endpoint: Endpoint,
                                      names: tuple[str, str]) -> None:
    """Hypothesis picks the attack, its size and its place in the body; each gets a clear 4xx, nothing stored."""
    topic, uid = names
    before = footprint(rclient, settings, topic, uid)

    @HOSTILE
    @given(attack=attacks(endpoint))
    def attack_once(attack: tuple[str, Path, bytes, tuple[str, ...], tuple[int, ...]]) -> None:
        kind, slot, raw, words, statuses = attack
        data = raw if not slot else embed(endpoint.base(topic, uid), slot, raw)
        statuses = (413,) if len(data) > settings.max_body else statuses
        refused(send(client, endpoint, topic, data), *(() if 413 in statuses else words), statuses=statuses)
        assert footprint(rclient, settings, topic, uid) == before, kind

    attack_once()
