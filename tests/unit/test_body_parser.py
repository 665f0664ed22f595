"""The fast body parser (orjson) and the strict one agree on every body: same object, or both refuse.

The fast parser also refuses every duplicate key, whatever colons the keys
and strings hold: orjson keeps the last of duplicate keys, so it proves there
was none by counting colons (:func:`httpqueue.api.base._keys_all_kept`) and
counts the keys in the text when the proof does not go through. Those bodies
are written as raw text, so keys can repeat, with colons and ``\\u003a``
escapes in them.
"""
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


# -- duplicate keys, with colons about

texts = st.sampled_from(["a", "a:", ":", "b", "x:y:z", "\\u003a", "a\\u003a", "\\\\u003a", "k\\\"", ""])
values = st.one_of(st.integers(0, 9).map(str), texts.map(lambda s: f'"{s}"'),
                   st.lists(texts.map(lambda s: f'"{s}"'), max_size=3).map(lambda v: "[" + ", ".join(v) + "]"))


def _object(pairs: list[tuple[str, str]], colon: str = ": ") -> bytes:
    return ("{" + ", ".join(f'"{key}"{colon}{value}' for key, value in pairs) + "}").encode()


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(texts, values), max_size=5), st.sampled_from([": ", ":", " : "]))
def test_fast_and_strict_parsers_agree_with_keys_repeated(pairs: list[tuple[str, str]], colon: str) -> None:
    data = _object(pairs, colon)
    assert outcome(parse_body, data) == outcome(parse_body_strictly, data)


@pytest.mark.parametrize("data", [
    b'{"a": "x", "b": "\\u003a", "b": "\\u003a"}', b'{"a:": 1, "a:": 2}', b'{"a": ":", "a": ":"}',
    b'{"cb": "http://h:1/", "cb": "http://h:2/"}', b'{"o": {"a": 1, "a": ":"}}', b'{"\\u003a": 1, ":": 2}',
])
def test_a_duplicate_key_is_refused_with_colons_about(data: bytes) -> None:
    with pytest.raises(BadRequest, match="twice"):
        parse_body(data)


def test_a_plain_create_body_is_taken_without_counting_its_keys_in_the_text() -> None:
    body = {"topic": "t", "delay": 1, "callback": "http://127.0.0.1:9/cb", "content": {"when": "12:00"}}
    assert parse_body(json.dumps(body).encode()) == body


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789 .e-é٣", max_size=60))
def test_long_integers_are_found_alike_in_bytes_and_in_text(text: str) -> None:
    """A run of 19 ASCII digits anywhere (not other scripts' digits, which JSON numbers cannot hold)."""
    from httpqueue.jsoncodec import may_hold_long_integers

    expected = any(text[i:i + 19].isascii() and text[i:i + 19].isdigit() and len(text[i:i + 19]) == 19
                   for i in range(len(text)))
    assert may_hold_long_integers(text.encode()) == expected
