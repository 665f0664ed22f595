"""What a failed call raises: one base, :class:`ApiError`, and a subclass per kind of answer.

::

    ApiError                 any failed call; ``status``, ``code``, ``message``, ``body``
    ├── InvalidRequest       400: ``fields`` names each field at fault and why
    ├── Unauthorized         401: no token, or a token the API does not accept
    ├── NotFound             404: no such task, schedule or endpoint
    ├── Conflict             409: the task's ``state`` forbids it, or an id was reused for other fields
    ├── PayloadTooLarge      413: the body is over the API's ``max_body``
    ├── ServerError          500 and other unexpected statuses (the details are in the server log)
    └── Unavailable          503: Redis or the broker is away; nothing was changed, retry later
        └── ConnectionFailed no answer at all (refused, reset, timed out)

The API answers every error as ``{"code", "error"[, "fields"]}``; the
exception carries those as ``code``, ``message`` and ``fields`` so a program
can branch on the class and show the message as the API wrote it.
"""
from __future__ import annotations

import typing as t


class ApiError(Exception):
    """A call that did not succeed; the base of every error the client raises."""

    status: int | None
    """The HTTP status, or ``None`` when no answer came (:class:`ConnectionFailed`)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None,
                 fields: t.Mapping[str, t.Any] | None = None, body: t.Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code if code is not None else status
        self.fields: dict[str, t.Any] = dict(fields or {})
        self.body = body

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class InvalidRequest(ApiError):
    """400: the request was refused as it is; ``fields`` maps each field at fault to its messages."""


class Unauthorized(ApiError):
    """401: send a token the API accepts (``HTTPQUEUE_TOKEN`` or ``token=``)."""


class NotFound(ApiError):
    """404: no such task (or past its retention), schedule or endpoint."""


class Conflict(ApiError):
    """409: the resource's state forbids the change (a delivered task cannot be deleted), or an id or
    Idempotency-Key was used before by a different request. ``state`` is the task's state when the API says it."""

    @property
    def state(self) -> str | None:
        return self.body.get("state") if isinstance(self.body, dict) else None


class PayloadTooLarge(ApiError):
    """413: the request body is larger than the API accepts."""


class ServerError(ApiError):
    """500 or another status the API does not document: a bug or a proxy in between."""


class Unavailable(ApiError):
    """503: the API's Redis or broker is unreachable and nothing was changed; the same call later will do.

    ``retry_after`` is the API's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: t.Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ConnectionFailed(Unavailable):
    """No answer: the connection was refused, reset or timed out.

    ``sent`` is False when the request never left (refused, connect timeout):
    the API did nothing. When True, whether it acted is unknown, which is why
    creates carry an Idempotency-Key: sending them again is safe.
    """

    def __init__(self, message: str, *, sent: bool, **kwargs: t.Any) -> None:
        super().__init__(message, **kwargs)
        self.sent = sent


BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest, 401: Unauthorized, 404: NotFound, 409: Conflict, 413: PayloadTooLarge, 503: Unavailable,
}
"""The exception class of each status the API documents; any other failed status is a :class:`ServerError`."""


def error_for(status: int, body: t.Any, retry_after: float | None = None) -> ApiError:
    """The exception for an answer with ``status`` and the decoded ``body`` (the API's error document)."""
    document = body if isinstance(body, dict) else {}
    message = str(document.get("error") or (body if isinstance(body, str) and body else f"HTTP {status}"))
    raw_fields = document.get("fields")
    fields = raw_fields if isinstance(raw_fields, dict) else None
    code = document.get("code") if isinstance(document.get("code"), int) else status
    cls = BY_STATUS.get(status, ServerError if status >= 500 or status < 400 else ApiError)
    if cls is Unavailable:
        return Unavailable(message, status=status, code=code, fields=fields, body=body, retry_after=retry_after)
    return cls(message, status=status, code=code, fields=fields, body=body)
