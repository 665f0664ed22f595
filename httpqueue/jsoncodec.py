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
_LONG_DIGITS_BYTES = re.compile(rb"\d{19}")
"""A run of 19 digits: maybe an integer beyond 64 bits, which orjson would read as a float."""


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


def loads(data: str | bytes) -> t.Any:
    """``data`` parsed; integers beyond 64 bits stay exact (orjson would make them floats)."""
    long = (_LONG_DIGITS_BYTES.search(data) if isinstance(data, bytes) else _LONG_DIGITS.search(data))
    if long is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # let the standard library say what is wrong (or read what orjson does not)
    return json.loads(data)
