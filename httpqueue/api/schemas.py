"""Request and response schemas (marshmallow): the schema of record for what the API accepts.

The same schemas validate requests and describe them in the OpenAPI document,
so the documentation cannot disagree with what the API accepts. Limits that
are settings (``max_delay``, ``max_topic``...) are read from the settings of
the app serving the request (:func:`current_settings`), so the schemas are
plain module-level classes and every app still enforces its own limits.
"""
from __future__ import annotations

import contextvars
import datetime
import math
import time
import numbers
import re
import typing as t

from flask import current_app, has_app_context
from marshmallow import RAISE, Schema, ValidationError, fields, missing, validate, validates, validates_schema
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA
from marshmallow.utils import is_collection

from httpqueue import jsoncodec
from httpqueue.config import Settings

DEFAULT_SETTINGS = Settings()
"""The declared defaults: the limits outside a request (e.g. when the OpenAPI document is built without an app)."""


_request_settings: contextvars.ContextVar[Settings | None] = contextvars.ContextVar("httpqueue_settings",
                                                                                    default=None)
"""The settings of the app serving the current request, set by :func:`bind_settings` (a ContextVar read
costs a fraction of Flask's ``current_app`` proxy: validators read limits several times per task)."""


def bind_settings(settings: Settings) -> contextvars.Token[Settings | None]:
    """Make ``settings`` the limits of this request (``create_app`` calls it before each request)."""
    return _request_settings.set(settings)


def unbind_settings(token: contextvars.Token[Settings | None]) -> None:
    _request_settings.reset(token)


def current_settings() -> Settings:
    """The settings of the app serving this request, else the defaults."""
    bound = _request_settings.get()
    if bound is not None:
        return bound
    if has_app_context() and "httpqueue" in current_app.extensions:
        return t.cast(Settings, current_app.extensions["httpqueue"].settings)
    return DEFAULT_SETTINGS


MEMO_SIZE = 4096
"""Most remembered field values per schema (a bound, not a cache policy: past it, values are just not kept)."""


Deserializer = t.Callable[[t.Any, t.Any, t.Any], t.Any]
"""A field's load of one present value: ``(value, attr, data) -> loaded``, raising :class:`ValidationError`."""


def compiled(field: fields.Field) -> Deserializer:
    """``field.deserialize`` for a present value, without the parts that cost and do nothing on valid input.

    ``Field.deserialize`` builds an ``And`` of the field's validators on
    every call (a property), collects their errors in lists and dicts, and
    checks for a missing value the caller has already ruled out; in a batch
    that was a sixth of the request's CPU. The result here calls the same
    ``_deserialize`` and the same validators in the same order, and lets the
    first :class:`ValidationError` through: the fast load then hands the input
    to ``Schema.load``, which gathers every message. A ``List`` of a field that
    compiles loads its items the same way. A field class that overrides
    ``deserialize``, ``_validate`` or the missing/null check, or has
    ``pre_load``/``post_load`` functions, keeps its own ``deserialize``.
    """
    kind = type(field)
    if (kind.deserialize is not fields.Field.deserialize or kind._validate is not fields.Field._validate
            or kind._validate_missing is not fields.Field._validate_missing or field.pre_load or field.post_load):
        return field.deserialize
    convert: Deserializer = field._deserialize
    if kind is fields.List:
        convert = _list_of(compiled(t.cast(fields.List[t.Any], field).inner))
    validators = tuple(field.validators)
    allow_none = field.allow_none

    def deserialize(value: t.Any, attr: t.Any, data: t.Any) -> t.Any:
        if value is None:
            if allow_none:
                return None
            raise ValidationError("null")
        output = convert(value, attr, data)
        for validator in validators:
            validator(output)
        return output
    return deserialize


def _list_of(item: Deserializer) -> Deserializer:
    """``List._deserialize`` with each item loaded by ``item`` (its own messages come from ``Schema.load``)."""
    def convert(value: t.Any, attr: t.Any, data: t.Any) -> list[t.Any]:
        if not is_collection(value):
            raise ValidationError("invalid")
        return [item(each, None, None) for each in value]
    return convert


class FastLoadSchema(Schema):
    """A schema that loads plain, valid input without marshmallow's per-load machinery, and errors with it.

    ``Schema.load`` spends most of its time on bookkeeping (error stores,
    partial and unknown handling, hook dispatch) that a valid object does not
    need: for a batch of 1,000 tasks that was most of the request's CPU. The
    fast path runs the schema's *own* declarations, so there is no second
    validator to drift from the first: each declared field's ``deserialize``
    (its type check, conversions and validators), the ``@validates`` methods
    of each field and the ``@validates_schema`` methods, in marshmallow's
    order. Anything it cannot take as is (not a dict, an unknown key, any
    validation error) is handed to ``Schema.load``, which then raises with
    every message. A test checks that both paths give the same result.
    """

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        hooks = type(self)._hooks
        self._fast = not (hooks[PRE_LOAD] or hooks[POST_LOAD] or self.opts.unknown != RAISE or self.many)
        validators: dict[str, list[tuple[t.Callable[..., t.Any], str]]] = {}
        for attr, _, kwargs_ in hooks[VALIDATES]:
            for name in kwargs_["field_names"]:
                validators.setdefault(name, []).append((getattr(self, attr), self.fields[name].data_key or name))
        self._fields = [(f.data_key or name, name, f, compiled(f), name in self.MEMO_FIELDS,
                         tuple(validators.get(name, ()))) for name, f in self.load_fields.items()]
        self._known = frozenset(key for key, *_ in self._fields)
        # what the fast load needs of a field, by the key it is sent as; and of each field in order, if absent
        self._present = {key: (name, deserialize, remembered, checks)
                         for key, name, _, deserialize, remembered, checks in self._fields}
        self._absent = [(key, name, f.required, f.load_default, checks) for key, name, f, _, _, checks in self._fields]
        self._schema_validators = [getattr(self, attr) for attr, many, kwargs_ in hooks[VALIDATES_SCHEMA]
                                   if not many and not kwargs_.get("pass_original")]
        self._fast = self._fast and len(self._schema_validators) == len(hooks[VALIDATES_SCHEMA])

    MEMO_FIELDS: t.ClassVar[frozenset[str]] = frozenset()
    """Fields whose deserialization depends only on the value and the settings (URLs, numbers checked
    against a limit): a batch repeats the same callback, delay and retry count a thousand times, so the
    result of a valid string or number is remembered (per settings), once it has also passed the field's
    ``@validates`` methods (which see nothing but the value)."""

    def _memo_for(self, settings: Settings) -> dict[tuple[str, type, t.Any], t.Any]:
        """The remembered values for ``settings`` (held by reference: a new settings object starts afresh)."""
        held = self.__dict__.get("_memo")
        if held is None or held[0] is not settings:
            held = self.__dict__["_memo"] = (settings, {})
        return t.cast("dict[tuple[str, type, t.Any], t.Any]", held[1])  # a string: no generic built per call

    def load(self, data: t.Any, *, many: bool | None = None, partial: t.Any = None,
             unknown: t.Any = None) -> t.Any:
        if self._fast and many is None and partial is None and unknown in (None, RAISE) and type(data) is dict \
                and data.keys() <= self._known:
            try:
                return self._load_fast(data)
            except ValidationError:
                pass  # the full load below says everything that is wrong
        return super().load(data, many=many, partial=partial, unknown=unknown)

    def _load_fast(self, data: dict[str, t.Any]) -> dict[str, t.Any]:
        out: dict[str, t.Any] = {}
        memo = self._memo_for(current_settings())
        present = self._present
        for key, value in data.items():  # the keys sent (load checked they are all fields), then the others
            name, deserialize, remembered, validators = present[key]
            kind = type(value)
            if remembered and (kind is str or kind is float or kind is int):
                # equal values of two types (1 and 1.0) are remembered apart; booleans (True == 1) not at all
                known = memo.get((name, kind, value), missing)
                if known is missing:
                    known = deserialize(value, key, data)
                    for validator, data_key in validators:
                        validator(known, data_key=data_key)
                    if len(memo) < MEMO_SIZE:
                        memo[(name, kind, value)] = known
                out[name] = known
                continue
            out[name] = value = deserialize(value, key, data)
            for validator, data_key in validators:  # marshmallow runs them after every field: the same on valid input
                validator(value, data_key=data_key)
        if len(data) < len(present):
            for key, name, required, default, validators in self._absent:
                if key in data:
                    continue
                if required:
                    raise ValidationError("missing")
                if default is missing:
                    continue
                out[name] = value = default() if callable(default) else default
                for validator, data_key in validators:
                    validator(value, data_key=data_key)
        for validator in self._schema_validators:
            validator(out, partial=None, many=False, unknown=None)
        return out


class SettingRange(validate.Range):
    """A range whose upper bound is a setting, with the unit in its message.

    ``max`` is read on each use, so the OpenAPI document and the error message
    show the limit of the app at hand.
    """

    def __init__(self, min: float, setting: str, unit: str = "", **kwargs: t.Any) -> None:
        self.setting = setting
        self.unit = unit
        super().__init__(min=min, max=None, **kwargs)

    @property  # type: ignore[override]
    def max(self) -> float:
        return t.cast(float, getattr(current_settings(), self.setting))

    @max.setter
    def max(self, value: t.Any) -> None:
        pass  # the bound is the setting's

    def _format_error(self, value: t.Any, message: str) -> str:
        """marshmallow's message with plain numbers and the unit: "... less than or equal to 31622400 seconds."."""
        text = (self.error or message).format(input=value, min=_number(self.min), max=_number(self.max))
        return f"{text.rstrip('.')} {self.unit}." if self.unit else text


class SettingLength(validate.Length):
    """A length whose maximum is a setting (``max_topic``, ``max_callback``)."""

    def __init__(self, min: int | None, setting: str, **kwargs: t.Any) -> None:
        self.setting = setting
        super().__init__(min=min, max=None, **kwargs)

    @property  # type: ignore[override]
    def max(self) -> int:
        return t.cast(int, getattr(current_settings(), self.setting))

    @max.setter
    def max(self, value: t.Any) -> None:
        pass


def _number(value: float | None) -> str:
    """``31622400`` rather than ``31622400.0`` in messages."""
    if value is None:
        return ""
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else f"{number:g}"


def finite(value: numbers.Real) -> bool:
    """Whether ``value`` is a finite number a float can hold.

    ``math.isfinite`` converts to float first, so an integer beyond about
    1.8e308 raises :class:`OverflowError` there (it did, as a 500, for
    ``{"delay": 1e400 written out as digits}``); such an integer is not finite here.
    """
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class Pattern(validate.Regexp):
    """A regular expression the whole value must match.

    ``re.match`` with a trailing ``$`` lets a final newline through, and ``\\Z``
    is not a JSON Schema (ECMA-262) pattern; ``fullmatch`` needs neither, so the
    pattern is written ``^...$`` for the OpenAPI document and still exact here.
    """

    def __call__(self, value: t.Any) -> t.Any:
        if not isinstance(value, str) or t.cast("re.Pattern[str]", self.regex).fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def number(value: t.Any) -> t.Any:
    """``value`` if it is a JSON number (not a string, not a boolean, finite), else :class:`ValidationError`."""
    kind = type(value)  # a JSON number is an int or a float: the ABC check only for anything else
    if kind is not int and kind is not float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise ValidationError("must be a number")
    if not finite(value):
        raise ValidationError("must be a finite number (at most about 1.8e308)")
    return value


class StrictNumber(fields.Number):
    """A JSON number: not a string, not a boolean, not NaN or infinite, within a float's range."""

    num_type = float

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> t.Any:
        # what fields.Number would do after its own checks (those of number() are stricter): convert
        return self.num_type(number(value))


class StrictInteger(StrictNumber):
    """A JSON integer (``3`` or ``3.0``), not a string or a boolean."""

    num_type = int  # type: ignore[assignment]

    def __init__(self, **kwargs: t.Any) -> None:
        # apispec maps the field by its class (a Number): say "integer" in the OpenAPI document,
        # so clients and generated tests send whole numbers
        kwargs["metadata"] = {"type": "integer", **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> t.Any:
        checked = number(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValidationError("must be a whole number")
        return int(checked)


RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z")
"""RFC 3339's date-time (with its offset), which is narrower than what ``fromisoformat`` reads."""

NO_OFFSET = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?\Z")
"""A date-time without an offset: ambiguous, so refused with a message that says what is missing."""


class ExecuteAt(fields.Field):
    """An absolute time: Unix seconds (a number, fractions for ms) or an RFC 3339 string with an offset."""

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not finite(value) or value < 0:
                raise ValidationError("must be a time: Unix seconds >= 0 or an RFC 3339 string")
            return float(value)
        if isinstance(value, str):
            match = RFC3339.match(value)
            if not match:
                if NO_OFFSET.match(value):
                    raise ValidationError("has no time zone offset: add Z for UTC or an offset such as +01:00 "
                                          "(e.g. 2026-12-24T18:00:00Z)")
                raise ValidationError("is not an RFC 3339 time (e.g. 2026-12-24T18:00:00Z)")
            stamp, fraction, offset = match.groups()
            try:  # fromisoformat wants upper case and at most microseconds
                when = datetime.datetime.fromisoformat(f"{stamp.upper()}{(fraction or '')[:7]}{offset.upper()}")
            except ValueError:
                raise ValidationError("is not an RFC 3339 time (e.g. 2026-12-24T18:00:00Z)") from None
            if when.timestamp() < 0:  # as for numbers: a due time before 1970 is a mistake, not "fire now"
                raise ValidationError("is before 1970-01-01T00:00:00Z; give a later time")
            return when.timestamp()
        raise ValidationError("must be a time: Unix seconds or an RFC 3339 string")


METHODS = ("POST", "PUT", "PATCH", "GET", "DELETE")
SUCCESS_RULES = ("code100", "2xx")
MAX_HEADERS = 20
DENIED_HEADERS = frozenset({
    # hop-by-hop and framing: set by the HTTP client, never by a task
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
    "content-length", "expect",
    # credentials: a task must not carry them where its logs and queries would show them
    "authorization", "proxy-authorization", "cookie", "set-cookie",
    # httpqueue's own: the body's type and the headers receivers trust
    "content-type", "webhook-id", "webhook-timestamp", "webhook-signature",
})
DENIED_PREFIXES = ("x-httpqueue-", "proxy-")
TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _name(text: str, limit: int = 64) -> str:
    """A client's name quoted for a message, cut to ``limit`` characters: a 1 MB name is not echoed back."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_headers(headers: t.Mapping[str, t.Any]) -> None:
    """Refuse extra headers that are malformed, too many, too large, or on the deny-list."""
    if len(headers) > MAX_HEADERS:
        raise ValidationError(f"at most {MAX_HEADERS} headers")
    if len({name.lower() for name in headers}) < len(headers):
        raise ValidationError("names a header twice (header names ignore case)")
    for name, value in headers.items():
        if not name or len(name) > 64 or not set(name) <= TOKEN_CHARS:
            raise ValidationError(f"{_name(name)} is not a valid header name (at most 64 letters, digits "
                                  "and !#$%&'*+-.^_`|~)")
        lowered = name.lower()
        if lowered in DENIED_HEADERS or lowered.startswith(DENIED_PREFIXES):
            raise ValidationError(f"header {name!r} may not be set by a task")
        if not isinstance(value, str) or len(value) > 1024 or any(c in value for c in "\r\n\0"):
            raise ValidationError(f"header {name!r} needs a string value of at most 1024 characters, one line")


NOT_AN_OBJECT = "must be a JSON object ({...}) with the fields listed in the OpenAPI document"
"""marshmallow's "Invalid input type." for a schema given an array, string or number, said plainly."""


class RetryPolicySchema(Schema):
    """How a failed attempt is retried (the default: base ``retry_base``, factor 2, no jitter)."""

    error_messages = {"type": NOT_AN_OBJECT}

    class Meta:
        unknown = RAISE

    base = StrictNumber(validate=validate.Range(0.1, 86_400),
                        metadata={"description": "Seconds before the first retry.", "example": 5})
    factor = StrictNumber(validate=validate.Range(1, 10), metadata={"description": "Growth per retry.", "example": 2})
    max_interval = StrictNumber(validate=validate.Range(0.1, 366 * 86_400),
                                metadata={"description": "Longest wait between two attempts, in seconds."})
    max_duration = StrictNumber(validate=validate.Range(1, 366 * 86_400),
                                metadata={"description": "Give up (fail) once this many seconds have passed since "
                                                         "the first due time."})
    jitter = fields.Boolean(truthy={True}, falsy={False},
                            metadata={"description": "Randomise each wait between 0 and its value (default: the "
                                                     "`retry_jitter` setting)."})


MAX_CONTENT_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in ``content``.

A receiver's JSON parser may recurse per level (Python's stops near 1,000,
some at far fewer), and no payload needs more; 32 is generous for documents.
"""

MAX_BODY_DEPTH = MAX_CONTENT_DEPTH + 3
"""Deepest nesting accepted in any request body: room for a batch's ``{"tasks": [{"content": ...}]}``
around content of :data:`MAX_CONTENT_DEPTH` levels. Checked before the body is parsed."""


def nesting(value: t.Any, limit: int | None = None) -> int:
    """How many levels of arrays and objects ``value`` has (a scalar has 0), without recursion; with
    ``limit``, counting stops at ``limit + 1`` (past it the exact depth does not matter).

    Level by level: each level is one list comprehension over the containers
    of the one above, without a call per value (a batch's body has thousands).
    """
    if not isinstance(value, (list, dict)):
        return 0
    depth, level = 1, [value]
    while limit is None or depth <= limit:
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (list, dict))]
        if not level:
            break
        depth += 1
    return depth


class CreateTaskSchema(FastLoadSchema):
    """A task to create: send ``content`` to ``callback`` after ``delay`` seconds or at ``execute_at``."""

    MEMO_FIELDS = frozenset({"topic", "callback", "failure_callback", "method", "success", "delay", "execute_at",
                             "retry", "timeout"})

    error_messages = {"type": NOT_AN_OBJECT}

    class Meta:
        unknown = RAISE

    topic = fields.String(required=True, validate=SettingLength(1, "max_topic"),
                          metadata={"description": "Free label for grouping tasks.", "example": "order"})
    delay = StrictNumber(validate=SettingRange(0, "max_delay", "seconds"),
                         metadata={"description": "Seconds from now until the callback (fractions allowed). "
                                                  "Give `delay` or `execute_at`.", "example": 15})
    execute_at = ExecuteAt(metadata={"description": "When to call back: Unix seconds or an RFC 3339 time. "
                                                    "A past time fires at once; more than `max_delay` "
                                                    "ahead is refused. Give `delay` or `execute_at`.",
                                     "example": "2026-12-24T18:00:00Z",
                                     "oneOf": [{"type": "number", "minimum": 0},
                                               {"type": "string", "format": "date-time"}]})
    retry = StrictInteger(load_default=0, validate=SettingRange(0, "max_retry"),
                          metadata={"description": "Retries after the first failed attempt (default 0: "
                                                   "none). Each waits `retry_base` x 2^n seconds (10, 20, "
                                                   "40 ... s by default) or as `retry_policy` says.",
                                    "example": 3})
    callback = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                          validate=SettingLength(None, "max_callback"),
                          metadata={"description": "http(s) URL that receives the request.",
                                    "example": "http://127.0.0.1:8888/"})
    content = fields.Raw(load_default="", allow_none=True,
                         metadata={"description": "Any JSON value, posted unchanged. Arrays and objects may "
                                                  f"nest at most {MAX_CONTENT_DEPTH} levels deep (send deeper "
                                                  "data as a JSON string).", "example": "hello"})
    id = fields.String(validate=Pattern(r"^[A-Za-z0-9._:-]{1,128}$",
                                                error="must be 1 to 128 of A-Z a-z 0-9 . _ : -"),
                       metadata={"description": "Your own task id: a second create with the same id (and the "
                                                "same fields) returns the first task instead of a new one."})
    method = fields.String(validate=validate.OneOf(METHODS),
                           metadata={"description": "HTTP method of the callback (GET and DELETE send no body).",
                                     "example": "POST"})
    headers = fields.Dict(keys=fields.String(), values=fields.Raw(),
                          metadata={"description": f"Extra request headers (at most {MAX_HEADERS}; hop-by-hop, "
                                                   "credential and httpqueue's own headers are refused).",
                                    "example": {"X-Tenant": "acme"}})
    timeout = StrictNumber(validate=SettingRange(0.1, "max_callback_timeout", "seconds"),
                           metadata={"description": "Seconds this task's callback may take "
                                                    "(default: the `callback_timeout` setting, 10 s).",
                                     "example": 5})
    success = fields.String(validate=validate.OneOf(SUCCESS_RULES),
                            metadata={"description": "`code100`: the answer must be JSON {\"code\": 100} "
                                                     "(the original Go httpqueue's rule, default); `2xx`: any 2xx status.",
                                      "example": "2xx"})
    retry_policy = fields.Nested(RetryPolicySchema)
    failure_callback = fields.Url(schemes={"http", "https"}, require_tld=False,
                                  validate=SettingLength(None, "max_callback"),
                                  metadata={"description": "URL notified once if this task fails for good."})

    @validates("topic")
    def _printable(self, value: str, **_: t.Any) -> None:
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValidationError("must not contain control characters")

    @validates("content")
    def _small(self, value: t.Any, **_: t.Any) -> None:
        """Shallow enough for any receiver's parser, and small enough for the store.

        Its JSON holds at least one bracket per level (strings may add more), so
        content with few brackets, counted in C, is shallow enough without the
        walk of :func:`nesting` (a batch checks a thousand contents).
        """
        try:
            text: bytes | None = jsoncodec.dumps(value)
        except (UnicodeEncodeError, RecursionError):  # a lone surrogate (the body parser refuses those, other
            text = None                                 # callers may not), or far too deep: said below
        if text is None or text.count(b"[") + text.count(b"{") > MAX_CONTENT_DEPTH:
            depth = nesting(value)
            if depth > MAX_CONTENT_DEPTH:
                raise ValidationError(f"nests arrays and objects {depth} levels deep; at most {MAX_CONTENT_DEPTH} "
                                      "are accepted (send deeper data as a JSON string)")
        if text is None:
            raise ValidationError("has a lone UTF-16 surrogate (\\ud800-\\udfff): it is not a character")
        limit = current_settings().max_content
        size = len(text)
        if size > limit:
            raise ValidationError(f"is {size} bytes of JSON; at most {limit} are accepted")

    @validates("headers")
    def _headers(self, value: t.Mapping[str, t.Any], **_: t.Any) -> None:
        check_headers(value)

    @validates_schema
    def _when(self, data: t.Mapping[str, t.Any], **_: t.Any) -> None:
        if "delay" in data and "execute_at" in data:
            raise ValidationError("give either delay or execute_at, not both", "execute_at")
        if "delay" not in data and "execute_at" not in data:
            raise ValidationError("Missing data for required field (or give execute_at).", "delay")
        limit = current_settings().max_delay
        if "execute_at" in data and data["execute_at"] - time.time() > limit:
            raise ValidationError(f"is more than {_number(limit)} seconds (max_delay) away", "execute_at")


IDEMPOTENCY_HEADER = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "example": "order-4711-reminder"},
    "description": "Makes the create idempotent: repeating it with the same key and the same body returns "
                   "the first task (marked replayed); the same key with a different body answers 409.",
}
"""OpenAPI description of the header both create endpoints read."""


class TaskIdSchema(Schema):
    """Names one task."""

    class Meta:
        unknown = RAISE

    id = fields.String(required=True, validate=validate.Length(1, 200),
                       metadata={"example": "35adbde5-77c4-4d65-adac-0082d91f2554"})


class CreatedSchema(Schema):
    id = fields.String(required=True)
    replayed = fields.Boolean(metadata={"description": "Present (true) when an idempotent create was repeated."})


class BatchSchema(FastLoadSchema):
    """Up to ``BATCH_MAX`` tasks, each validated on its own."""

    class Meta:
        unknown = RAISE

    tasks = fields.List(fields.Dict(), required=True, validate=validate.Length(1, 1000))


BATCH_MAX = 1000


class TaskSchema(Schema):
    """A task as ``/query`` returns it: the original Go httpqueue's fields, then httpqueue's."""

    id = fields.String()
    topic = fields.String()
    execute_time = fields.Integer(metadata={"description": "First due time, Unix seconds."})
    max_retry = fields.Integer()
    has_retry = fields.Integer(metadata={"description": "Failed attempts retried so far."})
    callback = fields.String()
    content = fields.Raw()
    creat_time = fields.Integer(metadata={"description": "Creation time, Unix seconds (the original Go httpqueue's spelling)."})
    state = fields.String(metadata={"description": "scheduled, queued, delivering, retrying, succeeded, failed, deleted"})
    attempts = fields.Integer()
    throttled = fields.Integer(metadata={"description": "Answers with code 101 so far."})
    execute_time_ms = fields.Integer()
    creat_time_ms = fields.Integer()
    next_attempt_ms = fields.Integer(allow_none=True)
    finished_time_ms = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    last_code = fields.Integer(allow_none=True)
    options = fields.Dict(metadata={"description": "Delivery options given at create (method, headers, timeout, "
                                                   "success, retry_policy, failure_callback)."})
    replayed = fields.Boolean(metadata={"description": "Present (true) when an idempotent create was repeated."})


class DeletedSchema(Schema):
    id = fields.String()
    state = fields.String(metadata={"example": "deleted"})
    previous_state = fields.String()


class ApiErrorSchema(Schema):
    code = fields.Integer(metadata={"example": 400})
    error = fields.String(metadata={"example": "invalid request: delay: must be a number"})
    fields_ = fields.Dict(data_key="fields")
