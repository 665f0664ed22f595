"""The create schema's fast load gives exactly what marshmallow's own load gives, or the same error.

The fast path runs the schema's own fields and validators without
marshmallow's per-load machinery; this checks it against ``Schema.load`` on
generated bodies, valid and invalid alike.
"""
from __future__ import annotations

import typing as t

from hypothesis import given, settings, strategies as st
from marshmallow import Schema, ValidationError

from httpqueue.api.schemas import CreateTaskSchema

SCHEMA = CreateTaskSchema()

values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                   st.text(max_size=20), st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
fields = {
    "topic": st.one_of(st.text(min_size=1, max_size=10), values),
    "delay": st.one_of(st.floats(0, 1e6, allow_nan=False), st.integers(-5, 10**8), values),
    "execute_at": st.one_of(st.floats(0, 2e9, allow_nan=False), st.sampled_from(
        ["2026-12-24T18:00:00Z", "2026-12-24T18:00:00", "1999-01-01T00:00:00+01:00", "x"]), values),
    "retry": st.one_of(st.integers(-1, 40), st.floats(0, 5, allow_nan=False), values),
    "callback": st.one_of(st.sampled_from(["http://127.0.0.1:8888/", "https://example.com/x", "ftp://x/", "nope"]),
                          values),
    "content": values,
    "id": st.one_of(st.sampled_from(["a", "a b", "x" * 200, "ok-1:2.3_4"]), values),
    "method": st.one_of(st.sampled_from(["POST", "GET", "post"]), values),
    "headers": st.one_of(st.dictionaries(st.sampled_from(["X-A", "Host", "x y", "X-Httpqueue-Id"]),
                                         st.one_of(st.text(max_size=5), st.integers()), max_size=3), values),
    "timeout": st.one_of(st.floats(0, 100, allow_nan=False), values),
    "success": st.one_of(st.sampled_from(["code100", "2xx", "3xx"]), values),
    "retry_policy": st.one_of(st.fixed_dictionaries({}, optional={"base": st.floats(0, 10, allow_nan=False),
                                                                  "factor": st.integers(0, 20)}), values),
    "failure_callback": st.one_of(st.just("http://127.0.0.1:9/f"), values),
    "unknown_field": values,
}
bodies = st.fixed_dictionaries({}, optional=fields)
valid_bodies = st.fixed_dictionaries(
    {"topic": st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=10),
     "delay": st.floats(0, 1e6, allow_nan=False), "callback": st.just("http://127.0.0.1:8888/")},
    optional={"retry": st.integers(0, 30), "content": values, "method": st.sampled_from(["POST", "GET"]),
              "timeout": st.floats(0.1, 60, allow_nan=False), "headers": st.just({"X-Tenant": "a"}),
              "retry_policy": st.just({"base": 2, "factor": 3})})


def outcome(load: t.Callable[[t.Any], t.Any], body: t.Any) -> tuple[str, t.Any]:
    try:
        return "ok", load(body)
    except ValidationError as exc:
        return "error", exc.normalized_messages()


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_fast_load_agrees_with_marshmallow(body: dict[str, t.Any]) -> None:
    assert outcome(SCHEMA.load, body) == outcome(lambda b: Schema.load(SCHEMA, b), body)


@settings(max_examples=200, deadline=None)
@given(valid_bodies)
def test_valid_bodies_take_the_fast_path_and_agree(body: dict[str, t.Any]) -> None:
    fast = SCHEMA._load_fast(dict(body))
    assert fast == Schema.load(SCHEMA, body)
    assert fast["retry"] == body.get("retry", 0) and fast["content"] == body.get("content", "")
