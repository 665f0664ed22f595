"""Helpers for programs that receive httpqueue's callbacks: verify, parse, deduplicate, answer.

::

    from httpqueue.receiver import Callback, Receiver
    from httpqueue.receiver.flask import callback_view

    receiver = Receiver.from_env()   # HTTPQUEUE_SIGNING_SECRETS, HTTPQUEUE_RECEIVER_REDIS_URL

    @app.post("/hook")
    @callback_view(receiver)
    def hook(callback: Callback) -> None:
        ...

:mod:`httpqueue.receiver.asgi` does the same for FastAPI and Starlette. The
package imports nothing of the server; the framework modules import their
framework only when used.
"""
from __future__ import annotations

from httpqueue.receiver.callback import DONE, Callback, Code, Reply, parse
from httpqueue.receiver.dedup import Claim, DedupStore, MemoryDedupStore, RedisDedupStore
from httpqueue.receiver.errors import CallbackRejected, InvalidSignature, MalformedCallback, SlowDown, StaleTimestamp
from httpqueue.receiver.handling import Receiver
from httpqueue.receiver.signature import Verifier

__all__ = [
    "DONE", "Callback", "CallbackRejected", "Claim", "Code", "DedupStore", "InvalidSignature", "MalformedCallback",
    "MemoryDedupStore", "Receiver", "RedisDedupStore", "Reply", "SlowDown", "StaleTimestamp", "Verifier", "parse",
]
