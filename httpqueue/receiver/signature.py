"""Standard Webhooks verification: the signature over ``"<id>.<timestamp>.<body>"`` and the timestamp window.

An equal implementation of the ``standardwebhooks`` package's ``Webhook.verify``
(the tests check both accept and refuse the same requests), with two
additions a receiver of httpqueue needs: several secrets at once, so a
receiver can hold the old and the new secret while httpqueue's are rotated,
and no third-party dependency.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import typing as t

from httpqueue.receiver.errors import InvalidSignature, StaleTimestamp

SECRET_PREFIX = "whsec_"

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

TOLERANCE = 300.0
"""Seconds a timestamp may be away from the receiver's clock, either way (the specification's 5 minutes).
A captured request replayed later than this is refused."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional, as in the specification's libraries)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "==")
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a signing secret may not be empty")
    return key


class Verifier:
    """Checks that a request was signed by httpqueue with one of ``secrets``, recently."""

    def __init__(self, secrets: t.Sequence[str] | str, tolerance: float = TOLERANCE) -> None:
        """``secrets``: ``whsec_`` secrets, as a list or comma-separated (httpqueue's setting's format)."""
        if isinstance(secrets, str):
            secrets = [s.strip() for s in secrets.split(",") if s.strip()]
        if not secrets:
            raise ValueError("verification needs at least one secret (httpqueue's HTTPQUEUE_SIGNING_SECRETS)")
        self._keys = [secret_key(s) for s in secrets]
        self.tolerance = tolerance

    def __repr__(self) -> str:  # never show the keys
        return f"Verifier({len(self._keys)} secrets, tolerance={self.tolerance:g}s)"

    def verify(self, headers: t.Mapping[str, str], body: bytes, now: float | None = None) -> None:
        """Return if ``body`` with ``headers`` carries a valid, recent signature; raise otherwise.

        ``headers`` are matched without regard to case.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        msg_id, stamp, signatures = (lowered.get(h) for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
        if not (msg_id and stamp and signatures):
            raise InvalidSignature("the request is not signed (webhook-id, -timestamp, -signature missing)")
        self._check_time(stamp, time.time() if now is None else now)
        signed = f"{msg_id}.{stamp}.".encode() + body
        expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in self._keys]
        if not any(hmac.compare_digest(given, want) for given in _signatures(signatures) for want in expected):
            raise InvalidSignature("no signature matches a secret of this receiver")

    def _check_time(self, stamp: str, now: float) -> None:
        try:
            sent = float(stamp)
        except ValueError:
            raise InvalidSignature("webhook-timestamp is not a number") from None
        if abs(now - sent) > self.tolerance:
            raise StaleTimestamp(f"webhook-timestamp is {now - sent:+.0f} s from this receiver's clock "
                                 f"(at most {self.tolerance:g} s either way)")


def _signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures of a ``webhook-signature`` header (others are ignored, as specified)."""
    found = []
    for item in header.split(" "):
        version, _, encoded = item.partition(",")
        if version != "v1":
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found
