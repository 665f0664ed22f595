"""Optional bearer-token authentication of the API.

With ``HTTPQUEUE_API_TOKENS`` set, every request except ``GET /health`` (the
load balancer's liveness probe) must carry ``Authorization: Bearer <token>``
with one of the tokens; several may be active at once, so tokens rotate
without downtime. Tokens are compared in constant time (``hmac.compare_digest``)
against every configured token, so neither the position nor the length of a
match leaks through timing. The dashboard page itself is static and holds no
data; the API calls it makes carry the token the user typed in.
"""
from __future__ import annotations

import hashlib
import hmac
import typing as t

from flask import Flask, request

OPEN_PATHS = frozenset({"/health"})
OPEN_PREFIXES = ("/dashboard",)
"""The dashboard's static page and assets: they hold no data, and every call they make is authenticated."""


def _digest(token: str) -> bytes:
    # compare fixed-length digests, so the comparison takes the same time whatever the token's length
    return hashlib.sha256(token.encode()).digest()


class TokenCheck:
    """Checks the bearer token of a request against the configured ones."""

    def __init__(self, tokens: t.Iterable[str]) -> None:
        self._digests = [_digest(token) for token in tokens if token]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        offered = _digest(token.strip())
        matched = False
        for expected in self._digests:  # no early exit: every token is compared
            matched |= hmac.compare_digest(offered, expected)
        return matched


def install(app: Flask, tokens: t.Iterable[str], unauthorized: t.Callable[[str], t.Any]) -> None:
    """Require a token on every request of ``app`` but the open paths, if any token is configured."""
    check = TokenCheck(tokens)
    if not check:
        return

    @app.before_request
    def require_token() -> t.Any:
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return None
        if check.accepts(request.headers.get("Authorization")):
            return None
        reason = "missing" if not request.headers.get("Authorization") else "not accepted"
        return unauthorized(f"authentication required: the bearer token is {reason} "
                            "(send Authorization: Bearer <token>)")
