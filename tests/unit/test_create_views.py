"""The create views read their body themselves: every refusal is the one the ``arguments`` decorator gave.

``/create``, ``POST /v1/tasks`` and ``/v1/tasks/batch`` parse and load their
body without webargs (:func:`httpqueue.api.base.load_body`). A reference
route decorated the way they were (``blp.arguments(schema)``) is added to the
app, and each bad body must get the same status and the same JSON from both.
Every body is refused before the store.
"""
from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from hypothesis import given, settings, strategies as st
from marshmallow import Schema, ValidationError

from httpqueue.api import compat, create_app, v1
from httpqueue.api.base import ApiBlueprint
from httpqueue.api.schemas import BatchSchema, CreateTaskSchema
from httpqueue.config import Settings

GOOD = {"topic": "order", "delay": 15, "callback": "http://127.0.0.1:8888/"}

reference = ApiBlueprint("reference", __name__, url_prefix="/reference")


@reference.route("/create", methods=["POST"])
@reference.arguments(compat.CREATE, location="json", error_status_code=400)
@reference.response(200)
def reference_create(body: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"loaded": True}


@reference.route("/batch", methods=["POST"])
@reference.arguments(BatchSchema, location="json", error_status_code=400)
@reference.response(200)
def reference_batch(body: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"loaded": True}


@pytest.fixture(scope="module")
def app(settings: Settings) -> Flask:
    """An app of the session's settings (the first app of a process installs its context, which Celery's
    broker configuration reads: an app of its own with a Redis nowhere broke later tests' publishing)."""
    built = create_app(settings)
    built.register_blueprint(reference)
    return built


deep: t.Any = 1
for _ in range(34):  # content one level deeper than MAX_CONTENT_DEPTH allows
    deep = [deep]

BAD_BODIES: list[bytes | dict[str, t.Any]] = [
    b"", b"   ", b"{not json", b"\xff\xfe", b"[1, 2]", b"42", b"null", b'"text"',
    b'{"topic": "a", "topic": "b", "delay": 1, "callback": "http://127.0.0.1:8888/"}',
    b'{"topic": "a", "delay": NaN, "callback": "http://127.0.0.1:8888/"}',
    b'{"topic": "a", "delay": 1e400, "callback": "http://127.0.0.1:8888/"}',
    b'{"topic": "\\ud800", "delay": 1, "callback": "http://127.0.0.1:8888/"}',
    b'{"content": ' + b"[" * 40 + b"]" * 40 + b"}",
    {}, {"topic": "order"}, {**GOOD, "bogus": 1}, {**GOOD, "delay": "15"}, {**GOOD, "delay": None},
    {**GOOD, "delay": -1}, {**GOOD, "delay": 10 ** 12}, {**GOOD, "execute_at": 5},
    {k: v for k, v in GOOD.items() if k != "delay"}, {**GOOD, "retry": 1.5}, {**GOOD, "retry": True},
    {**GOOD, "callback": "ftp://127.0.0.1/"}, {**GOOD, "topic": ""}, {**GOOD, "topic": "a\nb"},
    {**GOOD, "content": deep},
    {**GOOD, "headers": {"Host": "x"}}, {**GOOD, "retry_policy": {"factor": 50}}, {**GOOD, "retry_policy": 3},
    {**GOOD, "method": "post"}, {**GOOD, "id": "a b"}, {**GOOD, "execute_at": "2026-12-24T18:00:00"},
    {"bogus": 1, "other": 2, "delay": "x"},
]


def _post(client: t.Any, path: str, body: bytes | dict[str, t.Any]) -> tuple[int, t.Any]:
    if isinstance(body, bytes):
        answer = client.post(path, data=body, content_type="application/json")
    else:
        answer = client.post(path, json=body)
    return answer.status_code, answer.get_json()


@pytest.mark.parametrize("path", ["/create", "/v1/tasks"])
@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_create_refuses_a_body_as_the_arguments_decorator_did(app: Flask, path: str,
                                                                body: bytes | dict[str, t.Any]) -> None:
    client = app.test_client()
    expected = _post(client, "/reference/create", body)
    assert expected[0] == 400, expected
    assert _post(client, path, body) == expected


@pytest.mark.parametrize("body", [
    b"[]", b"{}", b'{"tasks": 5}', b'{"tasks": null}', b'{"tasks": []}', b'{"tasks": [1, 2]}',
    b'{"tasks": [{}], "more": 1}', b'{"tasks": [{"a": 1}, "x", null]}', b'{"tasks": {"a": 1}}',
    {"tasks": [GOOD] * 1001},
])
def test_a_batch_refuses_a_body_as_the_arguments_decorator_did(app: Flask, body: bytes | dict[str, t.Any]) -> None:
    client = app.test_client()
    expected = _post(client, "/reference/batch", body)
    assert expected[0] == 400, expected
    assert _post(client, "/v1/tasks/batch", body) == expected


def test_the_create_views_are_not_wrapped(app: Flask) -> None:
    """The decorators above the create views only document: Flask calls the view itself."""
    assert app.view_functions["tasks.create"] is compat.create
    assert app.view_functions["v1.create"] is v1.create
    assert app.view_functions["v1.batch"] is v1.batch


BATCH = BatchSchema()
items = st.one_of(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.integers(), st.none(),
                  st.text(max_size=3), st.lists(st.integers(), max_size=2))


def _outcome(load: t.Callable[[t.Any], t.Any], body: t.Any) -> tuple[str, t.Any]:
    try:
        return "ok", load(body)
    except ValidationError as exc:
        return "error", exc.normalized_messages()


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={"tasks": st.one_of(st.lists(items, max_size=4), items),
                                           "more": st.integers()}))
def test_the_batch_schema_s_fast_load_agrees_with_marshmallow(body: dict[str, t.Any]) -> None:
    assert _outcome(BATCH.load, body) == _outcome(lambda b: Schema.load(BATCH, b), body)


CREATE = CreateTaskSchema()
scalars = st.one_of(st.booleans(), st.integers(-2, 3), st.floats(-2, 3, allow_nan=False), st.none(),
                    st.sampled_from([0, 1, 1.0, 0.0, -0.0, 2.5, 10**20, "1", "", "2026-12-24T18:00:00Z"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({"topic": st.just("t"), "callback": st.just("http://h/")},
                                      optional={"delay": scalars, "retry": scalars, "timeout": scalars,
                                                "execute_at": scalars}), min_size=1, max_size=8))
def test_remembered_numbers_load_as_marshmallow_loads_them(bodies: list[dict[str, t.Any]]) -> None:
    """The fast load remembers valid numbers per field (a batch repeats them): whatever was remembered
    before, each body loads as marshmallow loads it (the schema's memo lives on across examples, so
    values and their orders mix)."""
    for body in bodies:
        assert _outcome(CREATE.load, body) == _outcome(lambda b: Schema.load(CREATE, b), body)


def test_a_remembered_integer_is_not_a_boolean() -> None:
    fields = {"topic": "t", "callback": "http://h/", "delay": 1}
    assert CREATE.load({**fields, "retry": 1})["retry"] == 1
    assert _outcome(CREATE.load, {**fields, "retry": True})[0] == "error"
    assert _outcome(CREATE.load, {**fields, "retry": 1.5})[0] == "error"
    assert CREATE.load({**fields, "retry": 1.0})["retry"] == 1


@pytest.mark.parametrize("fields", [
    {"topic": "t", "callback": "http://h/", "delay": 1},
    {"topic": "t", "callback": "http://h/", "delay": 1, "retry": 3, "content": {"a": [1]}},
    {"topic": "t", "callback": "http://h/", "method": "PUT", "headers": {"X-A": "b"}, "timeout": 2.5,
     "success": "2xx", "retry_policy": {"base": 2}, "failure_callback": "http://h/f"},
    {"topic": "t", "callback": "http://h/", "options": {"method": "GET"}, "retry": 2},  # a schedule's template
    {"topic": "t", "callback": "http://h/", "options": {"method": "GET", "timeout": 1}, "timeout": 3},
])
def test_a_create_s_task_is_the_spec_s_task(fields: dict[str, t.Any]) -> None:
    from httpqueue.services import TaskSpec

    spec = TaskSpec.from_fields(fields)
    assert TaskSpec.options_of(fields) == spec.options
    for task_id, fingerprint in ((None, None), ("x", "f")):
        assert TaskSpec.task_of(fields, TaskSpec.options_of(fields), 5, task_id, fingerprint) == spec.at(
            5, task_id, fingerprint)


def _depth(value: t.Any) -> int:
    """Nesting by its definition (recursive): a container is one level more than its deepest child."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max((_depth(child) for child in value), default=0)
    return 0


json_values = st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=2)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                                        max_size=3), max_leaves=25)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_nesting_counts_the_levels_of_arrays_and_objects(value: t.Any) -> None:
    from httpqueue.api.schemas import nesting

    assert nesting(value) == _depth(value)
    for limit in (0, 1, 2):  # with a limit it counts no further than one level past it
        assert nesting(value, limit) == min(_depth(value), limit + 1)


def _nested(levels: int) -> t.Any:
    value: t.Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("content, message", [
    ("[" * 100, None),  # brackets in strings count towards the quick bound, not towards the depth
    ({"a": "{" * 40, "b": _nested(2)}, None),
    (_nested(32), None),
    (_nested(33), "nests arrays and objects 33 levels deep"),
    (_nested(5000), "nests arrays and objects 5000 levels deep"),  # too deep for the JSON encoders as well
    ({"a": "\ud800"}, "lone UTF-16 surrogate"),
    ([_nested(33), "\ud800"], "34 levels deep"),  # the depth is said first
])
def test_content_depth_and_characters(content: t.Any, message: str | None) -> None:
    outcome, result = _outcome(CREATE.load, {"topic": "t", "callback": "http://h/", "delay": 1, "content": content})
    if message is None:
        assert outcome == "ok" and result["content"] == content
    else:
        assert outcome == "error" and message in result["content"][0]
