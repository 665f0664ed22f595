"""What every blueprint of the API shares: its base class, the JSON body parser, and its context.

Blueprints are plain module-level objects (Flask's own layout); a view reaches
the process's context and the task service through :func:`ctx` and
:func:`service`, which read what :func:`~httpqueue.api.app.create_app` put on
the app serving the request.
"""
from __future__ import annotations

import contextvars
import itertools
import json
import math
import re
import sys
import typing as t

import orjson
from flask import Flask, Response, current_app, request
from flask_smorest import Blueprint
from marshmallow import Schema
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import BadRequest

from httpqueue import jsoncodec
from httpqueue.api.schemas import MAX_BODY_DEPTH, MAX_CONTENT_DEPTH, nesting
from httpqueue.context import Context
from httpqueue.exceptions import InvalidInput
from httpqueue.services import TaskService

CONTEXT_KEY = "httpqueue"
SERVICE_KEY = "httpqueue.service"

LARGEST_NUMBER = int(sys.float_info.max)
"""Numbers beyond a 64-bit float's range (about 1.8e308) are refused: most JSON readers (JavaScript's,
Go's ``encoding/json`` into a float64), the receivers of content among them, cannot hold them."""

_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
"""A JSON string literal, or an unterminated one up to the end of the text.

Every match attempt that starts at a quote succeeds (possessive loops, and the
end of the text closes an unterminated string), so the scan is linear: a
pattern that could fail would be retried from each escaped quote inside the
string, quadratic in a body of ``"\\"\\"\\"...``.
"""
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape in the text: only then can the parsed body hold a lone surrogate."""
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyRefused(ValueError):
    """The body is JSON that httpqueue refuses (too deep, a duplicate key, NaN...); the message says why."""


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text``, without parsing it.

    Checked before :func:`json.loads`, whose C parser recurses once per level:
    10,000 nested arrays would raise :class:`RecursionError` (a 500) deep in
    the parser instead of a 400 at the door. Brackets inside strings do not count.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _shown(text: str, limit: int = 40) -> str:
    """``text`` for a message: JSON-quoted, cut to ``limit`` characters (a 1 MB key is not echoed back)."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return json.dumps(cut)


def _unique_object(pairs: list[tuple[str, t.Any]]) -> dict[str, t.Any]:
    """A JSON object, refused if it has a key twice.

    ``json.loads`` keeps the last of duplicate keys silently, so
    ``{"delay": 5, "delay": 86400}`` would be taken as either value depending
    on the reader; refusing it is the only answer every client understands.
    """
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BodyRefused(f"the request body has the key {_shown(key)} twice in one object; "
                                  "send each key once")
            seen.add(key)
    return obj


def _no_constant(name: str) -> t.NoReturn:
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's extensions, not JSON (RFC 8259)."""
    raise BodyRefused(f"the request body contains {name}, which is not a JSON number; "
                      "send a finite number (or null)")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent; refused where it overflows to infinity (``1e400``)."""
    value = float(text)
    if not math.isfinite(value):
        raise BodyRefused(f"the number {_shown(text)[1:-1]} in the request body is too large; "
                          "numbers must be within +-1.8e308 (a 64-bit float)")
    return value


def _bounded_int(text: str) -> int:
    """A JSON integer within a 64-bit float's range.

    Without this, 5,000 digits hit Python's integer conversion limit and the
    client read advice about ``sys.set_int_max_str_digits()``.
    """
    digits = len(text) - text.startswith("-")
    value = int(text) if digits <= 309 else None
    if value is None or abs(value) > LARGEST_NUMBER:
        raise BodyRefused(f"the number {_shown(text)[1:-1]} ({digits} digits) in the request body is too large; "
                          "numbers must be within +-1.8e308 (a 64-bit float)")
    return value


def _lone_surrogate(value: t.Any, path: str = "") -> str | None:
    """Where in ``value`` a string (or key) holds a lone UTF-16 surrogate, as a path like ``tasks[0].topic``."""
    if isinstance(value, str):
        return (path or "the body")[:80] if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if _SURROGATE.search(key):
                return _SURROGATE.sub("?", where)[:80] + " (a key)"
            found = _lone_surrogate(item, where)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}[{index}]")
            if found:
                return found
    return None


_KEY_OR_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"\s*+(:?)')
"""Every string literal of a JSON text, and whether a colon follows it (then it is a key).

Strings are matched from their opening quote and contain no bare quote, so a
scan over valid JSON stays aligned on string boundaries: ``findall`` counts
the keys of the text exactly, without parsing it."""

def _count_keys(body: dict[str, t.Any]) -> int:
    """Keys of every object in ``body``."""
    keys, stack = 0, [t.cast(t.Any, body)]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            keys += len(value)
            value = value.values()
        stack.extend(child for child in value if type(child) is dict or type(child) is list)
    return keys


def _keys_all_kept(data: bytes, body: dict[str, t.Any]) -> bool:
    """Whether ``body`` has every key of the text ``data``: none was dropped as a duplicate.

    In valid JSON a colon outside strings follows a key, so the text's colons
    are its keys plus those inside its strings. Without ``\\u`` escapes a
    parsed string has a colon exactly where its text had one, and orjson
    writes one the same way, so ``body`` encoded again holds as many colons as
    the text, or fewer when a duplicate was dropped (it takes its own colon
    away); the encoding is counted in C, a batch's in about a tenth of a
    microsecond a task. Otherwise the keys are counted in the text
    (:data:`_KEY_OR_STRING`), which costs a scan of every string literal.
    """
    if b"\\u" not in data:
        try:
            if data.count(b":") == orjson.dumps(body).count(b":"):
                return True
        except TypeError:  # not encodable again (cannot come from orjson's own parse): count the keys
            pass
    return _count_keys(body) == _KEY_OR_STRING.findall(data).count(b":")


def parse_body(data: bytes) -> dict[str, t.Any]:
    """The request body as a JSON object, or :class:`~werkzeug.exceptions.BadRequest` saying what is wrong.

    The common case, a plain UTF-8 JSON object, is parsed by orjson; a body
    that orjson refuses, or that is not plainly acceptable (a key twice, too
    deep, a number orjson may have changed), goes through :func:`parse_body_strictly`,
    which accepts or refuses it with a message. Both give the same result for
    any body the fast path takes (a test checks it).
    """
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return parse_body_strictly(data)
    if (type(body) is not dict or jsoncodec.may_hold_long_integers(data)
            or nesting(body, MAX_BODY_DEPTH) > MAX_BODY_DEPTH or not _keys_all_kept(data, body)):
        return parse_body_strictly(data)
    return t.cast("dict[str, t.Any]", body)


def parse_body_strictly(data: bytes) -> dict[str, t.Any]:
    """The request body as a JSON object, or :class:`~werkzeug.exceptions.BadRequest` saying what is wrong.

    Stricter than ``json.loads`` where leniency would store something other
    than what the client meant or fail later as a 500: the body must be text
    in a Unicode encoding, a JSON object, at most :data:`MAX_BODY_DEPTH`
    levels deep, without a key twice in one object, without NaN or Infinity,
    without numbers beyond a 64-bit float and without lone UTF-16 surrogates
    (``"\\ud800"`` parses, but is no character: Redis and the receiver could
    not be sent it).
    """
    if not data.strip():
        raise BadRequest("the request body is empty; send a JSON object")
    encoding = json.detect_encoding(data)  # UTF-8 (with or without BOM), or UTF-16/32 as RFC 4627 allowed
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not valid {encoding.upper().replace('-SIG', '')}: byte "
                         f"0x{exc.object[exc.start]:02x} at position {exc.start} cannot be decoded; "
                         "send JSON encoded as UTF-8") from None
    depth = nesting_depth(text)
    if depth > MAX_BODY_DEPTH:
        raise BadRequest(f"the request body nests arrays and objects {depth} levels deep; at most "
                         f"{MAX_BODY_DEPTH} are accepted (a task's content at most {MAX_CONTENT_DEPTH})")
    try:
        body = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_no_constant,
                          parse_float=_finite_float, parse_int=_bounded_int)
    except BodyRefused as exc:
        raise BadRequest(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}; send a JSON object") from None
    except RecursionError:  # the depth check counts every level, so this is a backstop only
        raise BadRequest(f"the request body nests arrays and objects too deeply; at most {MAX_BODY_DEPTH} "
                         "levels are accepted") from None
    if not isinstance(body, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(body), "a number")
        raise BadRequest(f"the request body must be a JSON object ({{...}}) with this endpoint's fields, "
                         f"not {kind}")
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(body)
        if where:
            raise BadRequest(f"the request body has a lone UTF-16 surrogate escape (\\ud800-\\udfff without its "
                             f"pair) in {where}: it is not a character; send valid Unicode text")
    return body


class JsonBodyParser(FlaskParser):
    """Read the body as JSON whatever its Content-Type, as the original Go httpqueue did; refuse anything else.

    Every JSON endpoint takes an object, so :func:`parse_body`'s refusals
    (with a message that says what is wrong) apply to all of them alike.
    """

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req: t.Any) -> t.Any:
        return parse_body(req.get_data(cache=True))


ViewFunc = t.TypeVar("ViewFunc", bound=t.Callable[..., t.Any])


def _documentation_only(documenting: t.Callable[[ViewFunc], t.Any]) -> t.Callable[[ViewFunc], ViewFunc]:
    """A flask-smorest decorator that only documents: the view keeps its own body, without a wrapper.

    flask-smorest's ``doc`` and ``alt_response`` wrap the view in a function
    that looks up ``current_app`` and calls the next layer, adding nothing at
    run time (their effect is the ``_apidoc`` they attach). On the create path
    those layers cost a few microseconds per request for no behaviour, so here
    the documentation is moved onto the view itself.
    """
    def decorator(func: ViewFunc) -> ViewFunc:
        func._apidoc = documenting(func)._apidoc  # type: ignore[attr-defined]
        return func
    return decorator


class ApiBlueprint(Blueprint):
    """flask-smorest's blueprint with httpqueue's body parser and wrapper-free documentation decorators."""

    ARGUMENTS_PARSER = JsonBodyParser()

    @staticmethod
    def doc(**kwargs: t.Any) -> t.Callable[[ViewFunc], ViewFunc]:
        return _documentation_only(Blueprint.doc(**kwargs))

    def alt_response(self, *args: t.Any, **kwargs: t.Any) -> t.Callable[[ViewFunc], ViewFunc]:
        return _documentation_only(super().alt_response(*args, **kwargs))

    def documented_arguments(self, *args: t.Any, **kwargs: t.Any) -> t.Callable[[ViewFunc], ViewFunc]:
        """``arguments``'s documentation only: the view reads its body itself, with :func:`load_body`.

        For the create routes: webargs' parse and flask-smorest's wrapper cost
        a tenth of a single create's CPU around the two calls that do the work.
        """
        return _documentation_only(super().arguments(*args, **kwargs))

    def documented_response(self, *args: t.Any, **kwargs: t.Any) -> t.Callable[[ViewFunc], ViewFunc]:
        """``response``'s documentation only: the view answers a :class:`Response` itself (:func:`answer`)."""
        return _documentation_only(super().response(*args, **kwargs))


def load_body(schema: Schema) -> t.Any:
    """The request body parsed (:func:`parse_body`) and loaded by ``schema``, as the ``arguments`` decorator would.

    A body that is not acceptable JSON raises :class:`~werkzeug.exceptions.BadRequest`
    and invalid fields the schema's :class:`~marshmallow.ValidationError`:
    the error handlers answer both with the same 400 as for the decorator's
    (a test sends the same bad bodies to both kinds of route).
    """
    return schema.load(parse_body(request.get_data(cache=True)))


def answer(document: t.Mapping[str, t.Any], status: int = 200, headers: t.Mapping[str, str] | None = None) -> Response:
    """A JSON answer that is already in its schema's shape, sent without the schema's dump.

    flask-smorest dumps a view's result through the response schema; for the
    documents built in :mod:`httpqueue.api.documents` that dump changes
    nothing and cost about a tenth of a create's CPU (``/v1/tasks`` dumps
    fifteen fields). The schema still describes the answer in the OpenAPI
    document, and tests check that dumping a document gives it back unchanged.
    The body is encoded as the app's JSON provider encodes it (orjson).
    """
    response = Response(jsoncodec.dumps(document), status, mimetype="application/json")
    if headers:
        response.headers.update(headers)
    return response


_serving: contextvars.ContextVar[Flask | None] = contextvars.ContextVar("httpqueue_app", default=None)
"""The app serving the current request, bound around its WSGI call (:class:`~httpqueue.api.app.HttpqueueFlask`):
a ContextVar read costs a tenth of the ``current_app`` proxy, and a create looks up its service and its
worker watch on every request."""


def bind_app(app: Flask) -> contextvars.Token[Flask | None]:
    return _serving.set(app)


def unbind_app(token: contextvars.Token[Flask | None]) -> None:
    _serving.reset(token)


def extensions() -> dict[str, t.Any]:
    """The extensions of the app serving this request (``current_app``'s outside a bound WSGI call)."""
    app = _serving.get()
    return (app if app is not None else current_app).extensions


def ctx() -> Context:
    """The context of the app serving this request."""
    return t.cast(Context, extensions()[CONTEXT_KEY])


def service() -> TaskService:
    """The task service of the app serving this request."""
    return t.cast(TaskService, extensions()[SERVICE_KEY])


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` header, checked (printable, at most 255 characters)."""
    key = request.environ.get("HTTP_IDEMPOTENCY_KEY")  # what request.headers.get reads, without building them
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or any(ord(c) < 33 or ord(c) > 126 for c in key):
        raise InvalidInput({"Idempotency-Key": ["must be 1 to 255 printable ASCII characters"]})
    return key
