"""Signed callbacks, as the Standard Webhooks specification describes them.

Each callback carries ``webhook-id`` (the task id: the same on every retry, so
a receiver can deduplicate), ``webhook-timestamp`` (Unix seconds when the
attempt was sent) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">``, once per active secret, separated by spaces.
Rotating a secret is adding the new one first, waiting until every receiver
knows it, then removing the old one; while both are set both signatures are
sent and a receiver holding either verifies. Receivers verify with the
specification's published libraries (``pip install standardwebhooks``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import typing as t

from httpqueue.config import SECRET_PREFIX as PREFIX
from httpqueue.config import ConfigError, parse_secret



def new_secret() -> str:
    """A fresh secret in the specification's format (``python -c "from httpqueue.delivery.signing import new_secret; print(new_secret())"``)."""
    import secrets

    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookSigner:
    """Signs callback bodies with every active secret (newest first)."""

    def __init__(self, secrets: t.Sequence[str]) -> None:
        if not secrets:
            raise ConfigError("signing needs at least one secret")
        self._keys = [parse_secret(s) for s in secrets]

    def __repr__(self) -> str:  # never show the keys
        return f"WebhookSigner({len(self._keys)} secrets)"

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` header value."""
        signed = f"{msg_id}.{timestamp}.".encode() + body
        return " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in self._keys)

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                "webhook-signature": self.signature(msg_id, timestamp, body)}
