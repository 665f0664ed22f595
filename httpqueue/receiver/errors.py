"""Why a callback is refused before its handler runs; one base, :class:`CallbackRejected`.

::

    CallbackRejected         ``status`` is the HTTP status the receiver answers
    ├── InvalidSignature     401: no signature headers, or none matches a secret
    ├── StaleTimestamp       401: ``webhook-timestamp`` outside the tolerance (a replay, or a clock far off)
    └── MalformedCallback    400: the body or the httpqueue headers cannot be read

httpqueue counts such an answer as a failed attempt and retries it as its
policy says, so a receiver deployed with a wrong secret loses nothing while
the secret is fixed.
"""
from __future__ import annotations


class CallbackRejected(Exception):
    """A request that is not a callback this receiver accepts."""

    status = 400


class InvalidSignature(CallbackRejected):
    status = 401


class StaleTimestamp(InvalidSignature):
    status = 401


class MalformedCallback(CallbackRejected):
    status = 400


class SlowDown(Exception):
    """Raised by a handler to answer ``{"code": 101}``: httpqueue tries again later (after ``retry_after``
    seconds when given), without counting it as a failed attempt. The deduplication claim is released."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__(f"slow down{f' for {retry_after} s' if retry_after is not None else ''}")
        self.retry_after = retry_after
