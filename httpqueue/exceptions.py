"""The errors httpqueue raises, all under one base class.

Hierarchy::

    HttpqueueError
    ├── StoreUnavailable       Redis (store or broker) cannot be reached; the API answers 503
    │   ├── ReplicasMissing    a create reached fewer replicas than create_min_replicas (503)
    │   └── BrokerUnavailable  the Celery broker does not answer (``/ready``: 503)
    ├── TaskNotFound           no task with this id (never created, or past its retention)
    ├── TaskConflict           the task's state forbids the request (delete while delivering...)
    ├── UnsafeCallbackError    the callback URL points where callbacks may not go (SSRF guard)
    ├── InvalidInput           a request field is invalid beyond its schema (SSRF guard, ...); the API answers 400
    └── DeliveryError          one callback attempt did not succeed
        ├── CallbackFailed     a failed attempt: retried after the backoff, or failed when retries are spent
        └── CallbackThrottled  the receiver answered code 101: wait, not counted as a failure

    ConfigError (a ValueError, defined in :mod:`httpqueue.config`, which imports nothing of the project)

``send`` raises the ``DeliveryError`` subclasses; the delivery task turns them
into an outcome and *parks* the next attempt in the store's timer after
Celery's backoff formula (it does not use Celery's ``autoretry_for``, whose
retries would be long ETA messages held in worker memory).
"""
from __future__ import annotations

import typing as t

from httpqueue.config import ConfigError

__all__ = [
    "BrokerUnavailable", "CallbackFailed", "CallbackThrottled", "ConfigError", "DeliveryError", "HttpqueueError", "InvalidInput",
    "ReplicasMissing", "StoreUnavailable", "TaskConflict", "TaskNotFound", "UnsafeCallbackError",
]


class HttpqueueError(Exception):
    """Base class of every error httpqueue raises on purpose."""


class StoreUnavailable(HttpqueueError):
    """Redis cannot be reached or answered with an error; the request may be retried."""


class ReplicasMissing(StoreUnavailable):
    """A write was not acknowledged by enough Redis replicas in time; it may still exist on the master."""


class BrokerUnavailable(StoreUnavailable):
    """The Celery broker cannot be reached: tasks are stored but no message can be sent now."""


class TaskNotFound(HttpqueueError):
    """No task has this id, or it has passed its retention time."""


class TaskConflict(HttpqueueError):
    """The task's current state forbids the requested change."""

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message)
        self.state = state


class InvalidInput(HttpqueueError):
    """Request fields that are well-formed but not acceptable; ``fields`` maps each name to its messages."""

    def __init__(self, fields: t.Mapping[str, t.Any]) -> None:
        super().__init__("; ".join(f"{name}: {messages}" for name, messages in fields.items()))
        self.fields = dict(fields)


class DeliveryError(HttpqueueError):
    """One callback attempt did not succeed; ``code`` is the receiver's answer, if any."""

    def __init__(self, message: str, code: int | None = None, duration: float = 0.0) -> None:
        super().__init__(message)
        self.code = code
        self.duration = duration


class CallbackFailed(DeliveryError):
    """A failed attempt (error code, bad body, timeout, refused connection)."""


class CallbackThrottled(DeliveryError):
    """The receiver said "too many requests" (code 101); ``retry_after`` is its wish, if given."""

    def __init__(self, message: str, retry_after: float | None, code: int | None = 101, duration: float = 0.0) -> None:
        super().__init__(message, code, duration)
        self.retry_after = retry_after


class UnsafeCallbackError(HttpqueueError, ValueError):
    """The callback URL points where callbacks may not go (loopback, private, metadata...)."""
