"""JSON encoding in one place: orjson where it can, the standard library where it cannot.

orjson is several times faster than :mod:`json` for the content of every task
(encoded at create, decoded at each attempt), but refuses integers beyond 64
bits, which JSON allows and httpqueue accepts in content (up to a float's
range); those few values go through :mod:`json`, so nothing a client sent is
refused or changed here. Output is compact UTF-8 in both cases.
"""
from __future__ import annotations

import json
import re
import typing as t

import orjson

_LONG_DIGITS = re.compile(r"\d{19}")
"""A run of 19 digits: maybe an integer beyond 64 bits, which orjson would read as a float."""

_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_LONG_ZEROS = b"0" * 19
"""The same run in bytes, found as 19 zeros once every digit is one: a tenth of the regular expression's
time on a batch's 100 kB body (which it scanned a byte at a time)."""


def dumps(value: t.Any) -> bytes:
    """Compact UTF-8 JSON of ``value``."""
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits (or a type orjson does not know): the standard library
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_text(value: t.Mapping[str, t.Any]) -> str:
    """Compact JSON text of a log line's fields: what orjson cannot encode is written as its ``str()``.

    Log lines take any value a caller passes (an exception, an enum); like
    ``json.dumps(..., default=str)``, but about a tenth of the cost, which
    counts on a path that writes a line for every create and every attempt.
    """
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def may_hold_long_integers(data: str | bytes) -> bool:
    """Whether the JSON text ``data`` may hold an integer beyond 64 bits, which orjson would read as a float
    (a run of 19 digits somewhere, maybe in a string: then the standard library reads it)."""
    if isinstance(data, bytes):
        return data.translate(_DIGITS_AS_ZEROS).find(_LONG_ZEROS) != -1
    return _LONG_DIGITS.search(data) is not None


def loads(data: str | bytes) -> t.Any:
    """``data`` parsed; integers beyond 64 bits stay exact (orjson would make them floats)."""
    if not may_hold_long_integers(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # let the standard library say what is wrong (or read what orjson does not)
    return json.loads(data)
