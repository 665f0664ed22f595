"""Flask integration: a view decorator and a ready-made blueprint.

::

    receiver = Receiver.from_env()

    @app.post("/hook")
    @callback_view(receiver)
    def hook(callback: Callback) -> None:
        ship(callback.content)          # return None: done; raise SlowDown(30): later

The view verifies the signature, ignores repeated attempts of a handled task,
and answers httpqueue with ``{"code": 100}``; a handler that raises leaves the
task to be retried.
"""
from __future__ import annotations

import functools
import typing as t

from flask import Blueprint, Response, request

from httpqueue.receiver.callback import Callback, Reply
from httpqueue.receiver.handling import Receiver

SyncHandler = t.Callable[[Callback], t.Optional[Reply]]


def response_of(reply: Reply) -> Response:
    """A :class:`Reply` as a Flask response."""
    return Response(reply.json, status=reply.status, headers=reply.headers, mimetype="application/json")


def callback_view(receiver: Receiver) -> t.Callable[[SyncHandler], t.Callable[..., Response]]:
    """Turn ``handler(callback)`` into a Flask view answering httpqueue's callbacks through ``receiver``."""
    def decorate(handler: SyncHandler) -> t.Callable[..., Response]:
        @functools.wraps(handler)
        def view(**_: t.Any) -> Response:
            return response_of(receiver.handle(dict(request.headers.items()), request.get_data(), handler))
        return view
    return decorate


def blueprint(receiver: Receiver, handler: SyncHandler, rule: str = "/", name: str = "httpqueue_receiver",
              **options: t.Any) -> Blueprint:
    """A blueprint with one POST route, ``rule``, answering callbacks with ``handler``
    (``app.register_blueprint(blueprint(receiver, handler), url_prefix="/hooks")``)."""
    blp = Blueprint(name, __name__, **options)
    blp.add_url_rule(rule, "callback", callback_view(receiver)(handler), methods=["POST", "PUT", "PATCH"])
    return blp
