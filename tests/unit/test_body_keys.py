"""The fast body parser refuses every duplicate key, whatever colons the keys and strings hold.

orjson keeps the last of duplicate keys; the fast parser proves there was none
by counting colons (:func:`httpqueue.api.base._keys_all_kept`) and counts the
keys in the text when the proof does not go through. Bodies are written as
raw text here, so keys can repeat, with colons and ``\\u003a`` escapes in them.
"""
from __future__ import annotations

import json
import typing as t

import pytest
from hypothesis import given, settings, strategies as st
from werkzeug.exceptions import BadRequest

from httpqueue.api.base import parse_body, parse_body_strictly

texts = st.sampled_from(["a", "a:", ":", "b", "x:y:z", "\\u003a", "a\\u003a", "\\\\u003a", "k\\\"", ""])
values = st.one_of(st.integers(0, 9).map(str), texts.map(lambda s: f'"{s}"'),
                   st.lists(texts.map(lambda s: f'"{s}"'), max_size=3).map(lambda v: "[" + ", ".join(v) + "]"))


def _object(pairs: list[tuple[str, str]], colon: str = ": ") -> bytes:
    return ("{" + ", ".join(f'"{key}"{colon}{value}' for key, value in pairs) + "}").encode()


def outcome(parse: t.Callable[[bytes], t.Any], data: bytes) -> tuple[str, t.Any]:
    try:
        return "ok", parse(data)
    except BadRequest as exc:
        return "refused", exc.description


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
