"""A callback from httpqueue, read into a :class:`Callback`, and the :class:`Reply` that answers it.

httpqueue POSTs ``{"id", "topic", "content"}`` (the original Go httpqueue's
body) with headers that name the task and the attempt
(``X-Httpqueue-Id``, ``-Attempt``, ``-Topic``, ``-Due``). GET and DELETE
callbacks carry no body: the headers alone say which task it is. The answer
``{"code": 100}`` means done; ``{"code": 101}`` asks httpqueue to slow down
(it tries again later, honouring ``Retry-After``); anything else is a failed
attempt, retried as the task's policy says.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
import typing as t

from httpqueue.receiver.errors import MalformedCallback

ID_HEADER = "x-httpqueue-id"
ATTEMPT_HEADER = "x-httpqueue-attempt"
TOPIC_HEADER = "x-httpqueue-topic"
DUE_HEADER = "x-httpqueue-due"
"""The headers httpqueue sends with every callback (lower case: they are matched without regard to case)."""


class Code(enum.IntEnum):
    """The codes of the callback protocol (the original Go httpqueue's)."""

    DONE = 100
    SLOW_DOWN = 101


@dataclasses.dataclass(frozen=True)
class Callback:
    """One attempt of one task.

    ``id`` is the same on every attempt of the task, which is what
    deduplication keys on; ``attempt`` counts from 1. ``content`` is the
    task's content exactly as it was created.
    """

    id: str
    topic: str
    content: t.Any
    attempt: int
    due_ms: int | None = None
    """When the task was due (Unix milliseconds): how late this attempt is, if the receiver cares."""
    headers: t.Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    body: bytes = dataclasses.field(default=b"", repr=False)


def parse(headers: t.Mapping[str, str], body: bytes) -> Callback:
    """The callback in a request's ``headers`` and ``body``; :class:`MalformedCallback` if it is not one."""
    lowered = {k.lower(): v for k, v in headers.items()}
    document = _document(body)
    task_id = document.get("id", lowered.get(ID_HEADER))
    if not isinstance(task_id, str) or not task_id:
        raise MalformedCallback("no task id (neither in the body nor in X-Httpqueue-Id)")
    if lowered.get(ID_HEADER, task_id) != task_id:
        raise MalformedCallback("the body's id and X-Httpqueue-Id differ")
    topic = document.get("topic", _unescape(lowered.get(TOPIC_HEADER, "")))
    return Callback(task_id, str(topic), document.get("content"), _int(lowered.get(ATTEMPT_HEADER), 1),
                    _int(lowered.get(DUE_HEADER), None), lowered, body)


def _document(body: bytes) -> dict[str, t.Any]:
    if not body:
        return {}
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedCallback("the body is not JSON") from None
    if not isinstance(document, dict):
        raise MalformedCallback("the body is not a JSON object with id, topic and content")
    return document


def _int(value: str | None, default: int | None) -> t.Any:
    try:
        return int(value) if value is not None else default
    except ValueError:
        raise MalformedCallback(f"{value!r} is not a whole number") from None


def _unescape(topic: str) -> str:
    """The topic header: httpqueue writes non-ASCII characters as backslash escapes (headers are ASCII)."""
    try:
        return topic.encode("ascii").decode("unicode_escape") if "\\" in topic else topic
    except (UnicodeEncodeError, UnicodeDecodeError):
        return topic


@dataclasses.dataclass(frozen=True)
class Reply:
    """An answer to httpqueue: status, JSON body and headers, for any web framework to send."""

    status: int
    body: dict[str, t.Any]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def done(cls) -> Reply:
        """``{"code": 100}``: the task is done; httpqueue will not send it again."""
        return cls(200, {"code": Code.DONE.value})

    @classmethod
    def slow_down(cls, retry_after: float | None = None) -> Reply:
        """``{"code": 101}``: try again later (after ``retry_after`` seconds, when given); not a failure."""
        headers = {"Retry-After": str(max(0, math.ceil(retry_after)))} if retry_after is not None else {}
        return cls(200, {"code": Code.SLOW_DOWN.value}, headers)

    @classmethod
    def refused(cls, status: int, message: str) -> Reply:
        """A refusal (bad signature, malformed request): a failed attempt for httpqueue."""
        return cls(status, {"code": status, "error": message})

    @property
    def code(self) -> int | None:
        code = self.body.get("code")
        return code if isinstance(code, int) else None

    @property
    def json(self) -> bytes:
        return json.dumps(self.body).encode()


DONE: dict[str, int] = {"code": Code.DONE.value}
"""The body that says done, for frameworks whose views return plain dicts (FastAPI)."""
