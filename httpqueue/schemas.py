"""Request and response schemas (marshmallow), built for the configured limits.

The same schemas validate requests and describe them in the OpenAPI document,
so the documentation cannot disagree with what the API accepts.
"""
from __future__ import annotations

import json
import math
import numbers
import typing as t

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from httpqueue.config import Settings


class StrictNumber(fields.Number):
    """A JSON number: not a string, not a boolean, not NaN or infinite."""

    num_type = float

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> t.Any:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValidationError("must be a number")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictInteger(StrictNumber):
    """A JSON integer (``3`` or ``3.0``), not a string or a boolean."""

    num_type = int

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> t.Any:
        number = super()._deserialize(value, attr, data, **kwargs)
        if isinstance(value, float) and not value.is_integer():
            raise ValidationError("must be a whole number")
        return int(number)


class Schemas:
    """The API's schemas for one set of limits."""

    def __init__(self, settings: Settings) -> None:
        self.create = create_schema(settings)()
        self.task_id = TaskIdSchema()


def create_schema(s: Settings) -> type[Schema]:
    class CreateTask(Schema):
        """A task to create: POST ``content`` to ``callback`` after ``delay`` seconds."""

        class Meta:
            unknown = RAISE

        topic = fields.String(required=True, validate=validate.Length(1, s.max_topic),
                              metadata={"description": "Free label for grouping tasks.", "example": "order"})
        delay = StrictNumber(required=True, validate=validate.Range(0, s.max_delay),
                             metadata={"description": "Seconds from now until the callback (fractions allowed).",
                                       "example": 15})
        retry = StrictInteger(load_default=0, validate=validate.Range(0, s.max_retry),
                              metadata={"description": "Retries after the first failed attempt "
                                                       f"(backoff {s.retry_base}, {2 * s.retry_base}, ... s).",
                                        "example": 3})
        callback = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                              validate=validate.Length(max=s.max_callback),
                              metadata={"description": "http(s) URL that receives the POST.",
                                        "example": "http://127.0.0.1:8888/"})
        content = fields.Raw(load_default="", allow_none=True,
                             metadata={"description": "Any JSON value, posted unchanged.", "example": "hello"})

        @validates("topic")
        def _printable(self, value: str, **_: t.Any) -> None:
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValidationError("must not contain control characters")

        @validates("content")
        def _small(self, value: t.Any, **_: t.Any) -> None:
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > s.max_content:
                raise ValidationError(f"is {size} bytes; at most {s.max_content} are accepted")

    return CreateTask


class TaskIdSchema(Schema):
    """Names one task."""

    class Meta:
        unknown = RAISE

    id = fields.String(required=True, validate=validate.Length(1, 200),
                       metadata={"example": "35adbde5-77c4-4d65-adac-0082d91f2554"})


class CreatedSchema(Schema):
    id = fields.String(required=True)


class BatchSchema(Schema):
    """Up to ``BATCH_MAX`` tasks, each validated on its own."""

    class Meta:
        unknown = RAISE

    tasks = fields.List(fields.Dict(), required=True, validate=validate.Length(1, 1000))


BATCH_MAX = 1000


class TaskSchema(Schema):
    """A task as ``/query`` returns it: the seed's fields, then httpqueue's."""

    id = fields.String()
    topic = fields.String()
    execute_time = fields.Integer(metadata={"description": "First due time, Unix seconds."})
    max_retry = fields.Integer()
    has_retry = fields.Integer(metadata={"description": "Failed attempts retried so far."})
    callback = fields.String()
    content = fields.Raw()
    creat_time = fields.Integer(metadata={"description": "Creation time, Unix seconds (the seed's spelling)."})
    state = fields.String(metadata={"description": "scheduled, queued, delivering, retrying, succeeded, failed, deleted"})
    attempts = fields.Integer()
    throttled = fields.Integer(metadata={"description": "Answers with code 101 so far."})
    execute_time_ms = fields.Integer()
    creat_time_ms = fields.Integer()
    next_attempt_ms = fields.Integer(allow_none=True)
    finished_time_ms = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    last_code = fields.Integer(allow_none=True)


class DeletedSchema(Schema):
    id = fields.String()
    state = fields.String(metadata={"example": "deleted"})
    previous_state = fields.String()


class ApiErrorSchema(Schema):
    code = fields.Integer(metadata={"example": 400})
    error = fields.String(metadata={"example": "invalid request: delay: must be a number"})
    fields_ = fields.Dict(data_key="fields")
