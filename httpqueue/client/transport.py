"""What the sync and async clients share: where the API is, how answers are read, when to send again.

Only the sending differs between the two clients (``httpx.Client`` or
``httpx.AsyncClient``, ``time.sleep`` or ``asyncio.sleep``); every decision
is a plain function here, so both decide alike.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing as t

import httpx

from httpqueue import __version__
from httpqueue.client.calls import Call, Resend
from httpqueue.client.errors import ApiError, ConnectionFailed, Unavailable, error_for

T = t.TypeVar("T")

URL_ENV = "HTTPQUEUE_URL"
TOKEN_ENV = "HTTPQUEUE_TOKEN"

DEFAULT_URL = "http://127.0.0.1:2356"
"""Where ``httpqueue run`` and ``httpqueue api`` listen by default."""

DEFAULT_TIMEOUT = 10.0
"""Seconds one request may take (connect, send, answer) before it counts as a connection error."""

USER_AGENT = f"httpqueue-client/{__version__}"


@dataclasses.dataclass(frozen=True)
class Retries:
    """How often and how patiently a call is sent again after a 503 or a connection error.

    ``attempts`` counts the first send: the default waits 0.25, 0.5, 1 and 2
    seconds between five sends (a ``Retry-After`` from the API lengthens a
    wait, up to ``max_wait``), so a call gives up after about 4 seconds
    without an answer. ``Retries(attempts=1)`` never sends again.
    """

    attempts: int = 5
    first_wait: float = 0.25
    factor: float = 2.0
    max_wait: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts counts the first send: at least 1")

    def wait(self, resent: int, retry_after: float | None) -> float:
        """Seconds before send number ``resent + 2`` (``resent`` sends have been repeated so far)."""
        backoff = self.first_wait * self.factor ** resent
        return min(self.max_wait, max(backoff, retry_after or 0.0))


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """The API's base URL and the headers of every request."""

    url: str
    headers: dict[str, str]

    @classmethod
    def resolve(cls, url: str | None, token: str | None,
                environ: t.Mapping[str, str] = os.environ) -> Endpoint:
        """``url`` and ``token`` as given, else ``HTTPQUEUE_URL`` and ``HTTPQUEUE_TOKEN``, else the local default."""
        base = (url or environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"the API's URL must start with http:// or https://, not {base!r}")
        secret = token if token is not None else environ.get(TOKEN_ENV, "")
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        return cls(base, headers)


def request_args(call: Call[t.Any]) -> dict[str, t.Any]:
    """The keyword arguments of ``httpx.Client.request`` for ``call`` (relative to the base URL)."""
    args: dict[str, t.Any] = {"method": call.method.value, "url": call.path, "headers": dict(call.headers)}
    if call.params:
        args["params"] = dict(call.params)
    if call.json is not None:
        args["json"] = call.json
    return args


def read(call: Call[T], response: httpx.Response) -> T:
    """The call's result from ``response``, or the :class:`ApiError` its status means (raised)."""
    body = _body(response, call.text and response.status_code in call.accept)
    if response.status_code in call.accept:
        return call.read(body)
    raise error_for(response.status_code, body, _retry_after(response.headers.get("Retry-After")))


def connection_failed(exc: httpx.TransportError) -> ConnectionFailed:
    """A transport error as :class:`ConnectionFailed`; ``sent`` says whether the API may have seen it."""
    unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    return ConnectionFailed(f"no answer from the API: {type(exc).__name__}: {exc}", sent=not unsent)


def may_resend(call: Call[t.Any], error: ApiError) -> bool:
    """Whether sending ``call`` again cannot do its work twice, after it failed with ``error``.

    A 503 means the API changed nothing (Redis or the broker was away); a
    refused connection means it never saw the request. Any other failure of a
    call that is not idempotent stays an error: the API may have acted.
    """
    if call.resend is Resend.NEVER or not isinstance(error, Unavailable):
        return False
    if isinstance(error, ConnectionFailed) and error.sent:
        return call.resend is Resend.ALWAYS
    return True


def _body(response: httpx.Response, text: bool) -> t.Any:
    if text:
        return response.text
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
