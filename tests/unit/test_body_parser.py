"""The fast body parser (orjson) and the strict one agree on every body: same object, or both refuse."""
from __future__ import annotations

import json
import typing as t

import pytest
from hypothesis import given, settings, strategies as st
from werkzeug.exceptions import BadRequest

from httpqueue.api.base import parse_body, parse_body_strictly

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=30)


def outcome(parse: t.Callable[[bytes], t.Any], data: bytes) -> tuple[str, t.Any]:
    try:
        return "ok", parse(data)
    except BadRequest as exc:
        return "refused", exc.description


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_fast_and_strict_parsers_agree_on_objects(body: dict[str, t.Any]) -> None:
    data = json.dumps(body, ensure_ascii=False).encode()
    assert outcome(parse_body, data) == outcome(parse_body_strictly, data)


@pytest.mark.parametrize("data", [
    b'{"a": 1, "a": 2}', b'{"a": {"b": 1, "b": 1}}', b'{"a": 1e400}', b'{"n": 123456789012345678901234567890}',
    b'{"n": -9223372036854775809}', b'{"n": 1e20}', b'{"a": NaN}', b'{"a": "\\ud800"}', b'[1, 2]', b'"x"',
    b'\xef\xbb\xbf{"a": 1}', b'{"a": "\xff"}', b'{"a":' + b'[' * 40 + b']' * 40 + b'}',
    b'{"a": "x\\": y", "b": 2}', b'{"k\\"": 1, "k\\"" : 2}', b'{"a" :1,"b"\t:\n2}', b'', b'   ',
    json.dumps({"a": "é"}, ensure_ascii=False).encode("utf-16"),
])
def test_fast_and_strict_parsers_agree_on_edge_cases(data: bytes) -> None:
    assert outcome(parse_body, data) == outcome(parse_body_strictly, data)


def test_big_integers_stay_exact() -> None:
    assert parse_body(b'{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
