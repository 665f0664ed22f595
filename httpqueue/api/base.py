"""What every blueprint of the API shares: its base class, the JSON body parser, and its context.

Blueprints are plain module-level objects (Flask's own layout); a view reaches
the process's context and the task service through :func:`ctx` and
:func:`service`, which read what :func:`~httpqueue.api.app.create_app` put on
the app serving the request.
"""
from __future__ import annotations

import json
import typing as t

from flask import current_app, request
from flask_smorest import Blueprint
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import BadRequest

from httpqueue.context import Context
from httpqueue.exceptions import InvalidInput
from httpqueue.services import TaskService

CONTEXT_KEY = "httpqueue"
SERVICE_KEY = "httpqueue.service"


class JsonBodyParser(FlaskParser):
    """Read the body as JSON whatever its Content-Type, as the original Go httpqueue did; refuse anything else."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req: t.Any) -> t.Any:
        data = req.get_data(cache=True)
        if not data.strip():
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None


class ApiBlueprint(Blueprint):
    """flask-smorest's blueprint with httpqueue's body parser."""

    ARGUMENTS_PARSER = JsonBodyParser()


def ctx() -> Context:
    """The context of the app serving this request."""
    return t.cast(Context, current_app.extensions[CONTEXT_KEY])


def service() -> TaskService:
    """The task service of the app serving this request."""
    return t.cast(TaskService, current_app.extensions[SERVICE_KEY])


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` header, checked (printable, at most 255 characters)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or any(ord(c) < 33 or ord(c) > 126 for c in key):
        raise InvalidInput({"Idempotency-Key": ["must be 1 to 255 printable ASCII characters"]})
    return key
