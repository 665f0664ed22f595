"""Every error as JSON ``{"code", "error"[, "fields"]}``, with a message that says what is wrong.

400 for invalid input (``fields`` names each field at fault), 401 without a
valid token, 404 for an unknown id or path, 405 for a wrong method, 409 for a
state conflict, 413 for an oversized body, 503 while Redis is unreachable,
500 (without a traceback: that goes to the server log) for anything unexpected.
An answer names at most :data:`MAX_FIELDS` fields and cuts long names and
messages, so a hostile body cannot make its 400 a megabyte echo of itself.
"""
from __future__ import annotations

import logging
import typing as t

from flask import Flask, Response, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import BadRequest, HTTPException, MethodNotAllowed

from httpqueue import events, logs
from httpqueue.api.base import ctx
from httpqueue.etcd.client import EtcdUnavailable
from httpqueue.exceptions import BrokerUnavailable, InvalidInput, ReplicasMissing, StoreUnavailable, TaskConflict, TaskNotFound


MAX_MESSAGE = 1000
"""Longest ``error`` text; a message that quotes the client (a path, an id) is cut there."""

MAX_FIELDS = 20
"""Most fields named in one 400; a body with 100,000 unknown keys got a 4 MB answer naming each."""

MAX_NAME = 100
"""Longest field name or message repeated back in ``fields``: a 1 MB key is not echoed whole."""


def error(code: int, message: str, fields: t.Any = None, **extra: t.Any) -> Response:
    """A JSON error answer."""
    body: dict[str, t.Any] = {"code": code, "error": _clip(message, MAX_MESSAGE), **extra}
    if fields:
        body["fields"] = fields
    response = jsonify(body)
    response.status_code = code
    return response


def unauthorized(message: str) -> Response:
    response = error(401, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="httpqueue"'
    return response


def invalid(fields: t.Mapping[str, t.Any]) -> Response:
    """400 naming each field at fault (the first :data:`MAX_FIELDS` of them, and how many more)."""
    shown = {_clip(str(name), MAX_NAME): _clipped(messages) for name, messages in list(fields.items())[:MAX_FIELDS]}
    more = len(fields) - len(shown)
    message = "invalid request: " + "; ".join(f"{name}: {' '.join(_flatten(msgs))}" for name, msgs in shown.items())
    if more > 0:
        message += f"; and {more} more fields"
    return error(400, message, shown, **({"more_fields": more} if more > 0 else {}))


def register(app: Flask) -> None:
    """Install the handlers on ``app``."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        fields = (getattr(exc, "data", None) or {}).get("messages", {})
        fields = fields.get("json", fields.get("query", fields)) if isinstance(fields, dict) else fields
        if fields and isinstance(fields, dict) and (exc.code or 500) == 400:
            return invalid(fields)
        return error(exc.code or 500, _message(exc))

    @app.errorhandler(ValidationError)
    def validation(exc: ValidationError) -> Response:
        messages = exc.normalized_messages()
        return invalid(messages if isinstance(messages, dict) else {"_schema": messages})

    @app.errorhandler(InvalidInput)
    def invalid_input(exc: InvalidInput) -> Response:
        return invalid(exc.fields)

    @app.errorhandler(TaskNotFound)
    def not_found(exc: TaskNotFound) -> Response:
        return error(404, str(exc))

    @app.errorhandler(TaskConflict)
    def conflict(exc: TaskConflict) -> Response:
        return error(409, str(exc), state=exc.state)

    @app.errorhandler(StoreUnavailable)
    def unavailable(exc: StoreUnavailable) -> Response:
        events.emit("store_unavailable", logging.WARNING, error=str(exc)[:300])
        message = (str(exc) if isinstance(exc, (ReplicasMissing, BrokerUnavailable, EtcdUnavailable))
                   else "the task store (Redis) is unavailable; nothing was changed, retry shortly")
        response = error(503, message)
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        logs.LOGGER.exception("unhandled error in %s %s", request.method, request.path)
        return error(500, "internal error; the details are in the server log")


def _message(exc: HTTPException) -> str:
    if exc.code == 413:
        return f"the request body is larger than {ctx().settings.max_body} bytes"
    if isinstance(exc, MethodNotAllowed):
        return f"{request.method} is not allowed here; use {', '.join(sorted(exc.valid_methods or []))}"
    if exc.code == 404:
        return f"no such endpoint: {request.path}"
    if isinstance(exc, BadRequest) and exc.description:
        return str(exc.description)
    return exc.description or exc.name


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters: an error says what is wrong, it does not echo the request."""
    return text if len(text) <= limit else text[:limit] + "..."


def _clipped(messages: t.Any, depth: int = 0) -> t.Any:
    """``messages`` (marshmallow's nested dicts and lists of strings) with long names and texts cut."""
    if depth > 8:
        return "..."
    if isinstance(messages, dict):
        items = list(messages.items())
        return {_clip(str(k), MAX_NAME): _clipped(v, depth + 1) for k, v in items[:MAX_FIELDS]}
    if isinstance(messages, list):
        return [_clipped(m, depth + 1) for m in messages[:MAX_FIELDS]]
    return _clip(str(messages), MAX_MESSAGE // 2) if isinstance(messages, str) else messages


def _flatten(messages: t.Any) -> list[str]:
    if isinstance(messages, dict):
        return [f"{k}: {m}" for k, v in messages.items() for m in _flatten(v)]
    if isinstance(messages, list):
        return [m for item in messages for m in _flatten(item)]
    return [str(messages)]
