"""Sending one callback and judging the receiver's answer (the original Go httpqueue's backend protocol).

The callback is ``POST <url>`` with JSON ``{"id","topic","content"}``. The answer
``{"code": 100}`` is success; ``{"code": 101}`` asks us to slow down (honouring a
``Retry-After`` header); anything else, a body that is not JSON, a timeout or a
connection error is a failed attempt. Outcomes other than success are raised as
:class:`~httpqueue.exceptions.DeliveryError` subclasses, which the Celery task
turns into retries.

Callbacks (:func:`send_async`) and failure notices (:func:`notify_async`) go
through the worker process's aiohttp client (:mod:`httpqueue.delivery.aio`, one
event loop thread), so both have the same SSRF guard, limits and deadline.
Requests are built by :func:`callback_body` and :func:`callback_headers`; the
answer is judged by :func:`judge`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import time
import typing as t

import aiohttp

from httpqueue import __version__
from httpqueue.exceptions import CallbackFailed, CallbackThrottled
from httpqueue.store.records import TaskRecord

if t.TYPE_CHECKING:
    from httpqueue.delivery.aio import CallbackClient

SUCCESS_CODE = 100
THROTTLE_CODE = 101
BODYLESS = ("GET", "DELETE")
"""Methods whose callback carries no body (the id and topic are still in the headers)."""

MAX_RESPONSE_BYTES = 65_536
"""Most of a receiver's answer that is read; the rest is ignored (a receiver cannot exhaust memory)."""

MAX_REDIRECTS = 5
"""Redirect hops followed when ``follow_redirects`` is on (each one checked by the SSRF guard)."""


USER_AGENT = f"httpqueue/{__version__}"
"""The ``User-Agent`` of every callback."""


@dataclasses.dataclass(frozen=True)
class Delivered:
    """A successful attempt."""

    code: int
    duration: float


class Signer(t.Protocol):
    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]: ...


def callback_body(task: TaskRecord) -> bytes:
    """The original Go httpqueue's callback payload; ``content`` passes through unchanged."""
    return json.dumps({"id": task.id, "topic": task.topic, "content": task.content},
                      separators=(",", ":"), ensure_ascii=False).encode()


def callback_headers(task: TaskRecord, attempt: int, body: bytes, signer: Signer | None) -> dict[str, str]:
    """Headers that let a receiver deduplicate (id, attempt) and verify the sender.

    The task's own extra headers come first, so httpqueue's cannot be overridden
    (the create schema refuses those names anyway).
    """
    headers = {**(task.options or {}).get("headers", {}),
        "Content-Type": "application/json", "User-Agent": USER_AGENT,
        "X-Httpqueue-Id": task.id, "X-Httpqueue-Attempt": str(attempt),
        "X-Httpqueue-Topic": task.topic.encode("ascii", "backslashreplace").decode(),
        "X-Httpqueue-Due": str(task.due_ms),
    }
    if signer is not None:
        headers.update(signer.headers(task.id, int(time.time()), body))
    return headers


def request_of(task: TaskRecord, attempt: int, timeout: float,
               signer: Signer | None) -> tuple[str, float, bytes, dict[str, str]]:
    """The callback's method, timeout, body and headers: the task's options over the defaults.

    The options choose the method (GET and DELETE carry no body), the timeout
    and the success rule; ``timeout`` is the default.
    """
    options = task.options or {}
    method = options.get("method", "POST")
    body = callback_body(task) if method not in BODYLESS else b""
    headers = callback_headers(task, attempt, body, signer)
    if not body:
        headers.pop("Content-Type", None)
    return method, float(options.get("timeout") or timeout), body, headers


async def send_async(client: CallbackClient, task: TaskRecord, attempt: int, *, timeout: float,
                     follow_redirects: bool = False, signer: Signer | None = None) -> Delivered:
    """Send one callback through the process's aiohttp client (on its loop).

    Returns on success; raises ``CallbackFailed``/``CallbackThrottled`` for a
    failed or throttled attempt and ``UnsafeCallbackError`` when the guard
    refuses the destination.
    """
    method, timeout, body, headers = request_of(task, attempt, timeout, signer)
    started = time.perf_counter()
    try:
        status, raw, retry_after = await client.exchange(method, task.callback, body, headers, timeout,
                                                         follow_redirects)
    except asyncio.TimeoutError as exc:  # before OSError: it is one (and so are aiohttp's timeouts)
        raise CallbackFailed(f"no answer within {timeout:g}s", duration=time.perf_counter() - started) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise CallbackFailed(f"connection failed: {_reason(exc)}", duration=time.perf_counter() - started) from exc
    return judge(status, raw, retry_after, time.perf_counter() - started,
                 (task.options or {}).get("success", "code100"))


async def notify_async(client: CallbackClient, url: str, task: TaskRecord, document: t.Mapping[str, t.Any], *,
                       timeout: float, signer: Signer | None = None) -> Delivered:
    """POST a failure notice about ``task`` to ``url``; any 2xx answer is success, anything else raises
    ``CallbackFailed`` (``UnsafeCallbackError`` when the guard refuses the destination)."""
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {**callback_headers(task, task.attempts, body, signer), "X-Httpqueue-Event": "failed"}
    started = time.perf_counter()
    try:
        status, _, _ = await client.exchange("POST", url, body, headers, timeout)
    except asyncio.TimeoutError as exc:  # before OSError: it is one
        raise CallbackFailed(f"failure notice not delivered: no answer within {timeout:g}s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise CallbackFailed(f"failure notice not delivered: {_reason(exc)}") from exc
    duration = time.perf_counter() - started
    if not 200 <= status < 300:
        raise CallbackFailed(f"failure notice answered HTTP {status}", code=status, duration=duration)
    return Delivered(code=status, duration=duration)


def judge(status: int, raw: bytes, retry_after: str | None, duration: float, rule: str = "code100") -> Delivered:
    """Decide success, throttling or failure from the receiver's answer (pure; unit-tested).

    ``code100`` is the original Go httpqueue's rule: the body must be JSON ``{"code": 100}``
    (``101`` throttles). ``2xx``: any 2xx status succeeds, and 429 or 503
    throttle (with their ``Retry-After``); the body does not matter.
    """
    if rule == "2xx":
        if 200 <= status < 300:
            return Delivered(code=status, duration=duration)
        if status in (429, 503):
            raise CallbackThrottled(f"receiver answered HTTP {status}", retry_after=parse_retry_after(retry_after),
                                    code=status, duration=duration)
        raise CallbackFailed(f"receiver answered HTTP {status}: {_excerpt(raw)}", code=status, duration=duration)
    try:
        answer = json.loads(raw)
    except ValueError:
        raise CallbackFailed(f"HTTP {status} with a body that is not JSON: {_excerpt(raw)}",
                             code=None, duration=duration) from None
    code = answer.get("code") if isinstance(answer, dict) else None
    if code == SUCCESS_CODE and not isinstance(code, bool):
        return Delivered(code=code, duration=duration)
    if code == THROTTLE_CODE and not isinstance(code, bool):
        raise CallbackThrottled("receiver answered code 101 (too many requests)",
                                retry_after=parse_retry_after(retry_after), duration=duration)
    shown = code if isinstance(code, int) and not isinstance(code, bool) else None
    raise CallbackFailed(f"receiver answered {_excerpt(raw)} (HTTP {status})", code=shown, duration=duration)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), if valid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _excerpt(raw: bytes, limit: int = 200) -> str:
    text = raw[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(raw) > limit else ""))


def _reason(exc: BaseException) -> str:
    """The innermost cause of an HTTP client error, which says what actually happened."""
    for _ in range(8):
        inner = getattr(exc, "reason", None) or exc.__cause__ or (
            exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return f"{type(exc).__name__}: {exc}"[:300]
