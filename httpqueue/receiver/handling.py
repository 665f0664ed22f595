"""``Receiver``: verify, parse, deduplicate, run the handler, answer, in that order, for any framework.

The framework integrations (:mod:`httpqueue.receiver.flask`,
:mod:`httpqueue.receiver.asgi`) only move headers and body in and a
:class:`~httpqueue.receiver.callback.Reply` out; every decision is here.
"""
from __future__ import annotations

import inspect
import os
import typing as t

from httpqueue.receiver.callback import Callback, Code, Reply, parse
from httpqueue.receiver.dedup import Claim, DedupStore, MemoryDedupStore, RedisDedupStore
from httpqueue.receiver.errors import CallbackRejected, SlowDown
from httpqueue.receiver.signature import TOLERANCE, Verifier

SECRETS_ENV = "HTTPQUEUE_SIGNING_SECRETS"
"""The same variable as httpqueue's own setting: one secret list for both sides."""

REDIS_ENV = "HTTPQUEUE_RECEIVER_REDIS_URL"
"""Where :meth:`Receiver.from_env` keeps handled ids (without it: this process's memory)."""

BUSY_RETRY_AFTER = 5.0
"""Seconds httpqueue is asked to wait when an attempt arrives while an earlier one is still being handled."""

Handler = t.Callable[[Callback], t.Union[Reply, None, t.Awaitable[t.Union[Reply, None]]]]
"""A function of a :class:`Callback`; it returns ``None`` (done) or a :class:`Reply`, or raises :class:`SlowDown`."""


class Receiver:
    """Checks callbacks from httpqueue and runs each task's handler once.

    ``secrets`` are httpqueue's signing secrets (a list, or comma-separated);
    ``None`` accepts unsigned callbacks, for a receiver on a network only
    httpqueue can reach. ``dedup`` keeps handled ids (default: Redis at
    ``redis_url`` when given, else this process's memory).
    """

    def __init__(self, secrets: t.Sequence[str] | str | None, *, dedup: DedupStore | None = None,
                 redis_url: str | None = None, tolerance: float = TOLERANCE) -> None:
        self.verifier = Verifier(secrets, tolerance) if secrets else None
        if secrets is not None and self.verifier is None:
            raise ValueError("no signing secret given: pass secrets=None to accept unsigned callbacks")
        self.dedup: DedupStore = dedup or (RedisDedupStore.from_url(redis_url) if redis_url else MemoryDedupStore())

    @classmethod
    def from_env(cls, environ: t.Mapping[str, str] = os.environ, **kwargs: t.Any) -> Receiver:
        """Secrets from ``HTTPQUEUE_SIGNING_SECRETS`` (required), handled ids in ``HTTPQUEUE_RECEIVER_REDIS_URL``."""
        secrets = environ.get(SECRETS_ENV, "")
        if not secrets.strip():
            raise ValueError(f"{SECRETS_ENV} is not set: the receiver could not tell httpqueue's callbacks "
                             "from anyone else's")
        return cls(secrets, redis_url=environ.get(REDIS_ENV) or None, **kwargs)

    def accept(self, headers: t.Mapping[str, str], body: bytes) -> Callback:
        """The verified callback in a request; :class:`CallbackRejected` if it is not one."""
        if self.verifier is not None:
            self.verifier.verify(headers, body)
        return parse(headers, body)

    def handle(self, headers: t.Mapping[str, str], body: bytes, handler: Handler) -> Reply:
        """Answer one request, running ``handler`` unless the task was handled before (blocking frameworks)."""
        try:
            callback = self.accept(headers, body)
        except CallbackRejected as exc:
            return Reply.refused(exc.status, str(exc))
        early = self.repeat_reply(callback)
        if early is not None:
            return early
        try:
            outcome = handler(callback)
            if inspect.isawaitable(outcome):
                raise TypeError("an async handler needs ahandle (an ASGI integration)")
        except SlowDown as slow:
            self.dedup.release(callback.id)
            return Reply.slow_down(slow.retry_after)
        except BaseException:
            self.dedup.release(callback.id)
            raise
        return self._settle(callback, outcome)

    async def ahandle(self, headers: t.Mapping[str, str], body: bytes, handler: Handler) -> Reply:
        """:meth:`handle` for asyncio frameworks: ``handler`` may be async; a sync one and the store run in a thread."""
        from anyio import to_thread

        try:
            callback = self.accept(headers, body)
        except CallbackRejected as exc:
            return Reply.refused(exc.status, str(exc))
        early = await to_thread.run_sync(self.repeat_reply, callback)
        if early is not None:
            return early
        try:
            if inspect.iscoroutinefunction(handler):
                outcome = await handler(callback)
            else:  # a blocking handler must not hold up the event loop
                outcome = await to_thread.run_sync(handler, callback)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
        except SlowDown as slow:
            await to_thread.run_sync(self.dedup.release, callback.id)
            return Reply.slow_down(slow.retry_after)
        except BaseException:
            await to_thread.run_sync(self.dedup.release, callback.id)
            raise
        return await to_thread.run_sync(self._settle, callback, outcome)

    def repeat_reply(self, callback: Callback) -> Reply | None:
        """Claim the task: ``None`` when the handler should run, else the answer to a repeated attempt."""
        claim = self.dedup.claim(callback.id)
        if claim is Claim.DONE:
            return Reply.done()
        if claim is Claim.RUNNING:
            return Reply.slow_down(BUSY_RETRY_AFTER)
        return None

    def _settle(self, callback: Callback, outcome: t.Any) -> Reply:
        """Record the handler's outcome (done, or released to run again) and give its reply."""
        reply = outcome if isinstance(outcome, Reply) else Reply.done()
        if reply.code == Code.DONE:
            self.dedup.finish(callback.id)
        else:
            self.dedup.release(callback.id)
        return reply
