"""ASGI integration (Starlette and FastAPI): a FastAPI dependency and a Starlette endpoint.

FastAPI::

    app = FastAPI()
    install(app)                              # answers repeats and refusals
    receiver = Receiver.from_env()

    @app.post("/hook")
    def hook(cb: Callback = Depends(callback(receiver))) -> dict[str, int]:
        ship(cb.content)
        return DONE                           # {"code": 100}; raise SlowDown(30) for later

The dependency verifies and claims the task before the view runs; a repeat
of a handled task never reaches the view (:func:`install`'s handler answers
``{"code": 100}``). The claim is settled after the view: done when it
returned, released when it raised, so httpqueue's retry runs it again.

Starlette, without FastAPI: ``Route("/hook", endpoint(receiver, handler), methods=["POST"])``.
"""
from __future__ import annotations

import typing as t

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from httpqueue.receiver.callback import Callback, Reply
from httpqueue.receiver.errors import CallbackRejected, SlowDown
from httpqueue.receiver.handling import Handler, Receiver


class Answered(Exception):
    """Raised by the dependency when the request is answered without the view (a repeat, a refusal)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.body)
        self.reply = reply


def response_of(reply: Reply) -> Response:
    """A :class:`Reply` as a Starlette response."""
    return Response(reply.json, status_code=reply.status, headers=reply.headers, media_type="application/json")


def install(app: t.Any) -> None:
    """Register the answers of :class:`Answered` and :class:`SlowDown` on a Starlette or FastAPI ``app``."""
    async def answered(request: Request, exc: Exception) -> Response:
        return response_of(t.cast(Answered, exc).reply)

    async def slow_down(request: Request, exc: Exception) -> Response:
        return response_of(Reply.slow_down(t.cast(SlowDown, exc).retry_after))

    app.add_exception_handler(Answered, answered)
    app.add_exception_handler(SlowDown, slow_down)


def callback(receiver: Receiver) -> t.Callable[[Request], t.AsyncIterator[Callback]]:
    """A FastAPI dependency giving the view the verified :class:`Callback`, once per task."""
    async def dependency(request: Request) -> t.AsyncIterator[Callback]:
        try:
            cb = receiver.accept(request.headers, await request.body())
        except CallbackRejected as exc:
            raise Answered(Reply.refused(exc.status, str(exc))) from None
        early = await run_in_threadpool(receiver.repeat_reply, cb)
        if early is not None:
            raise Answered(early)
        try:
            yield cb
        except BaseException:
            await run_in_threadpool(receiver.dedup.release, cb.id)
            raise
        await run_in_threadpool(receiver.dedup.finish, cb.id)
    return dependency


def endpoint(receiver: Receiver, handler: Handler) -> t.Callable[[Request], t.Awaitable[Response]]:
    """A Starlette endpoint answering callbacks with ``handler`` (sync or async; ``None`` means done)."""
    async def answer(request: Request) -> Response:
        return response_of(await receiver.ahandle(request.headers, await request.body(), handler))
    return answer
