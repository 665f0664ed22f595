"""``create_app``: the Flask application for one set of settings (Flask's application factory).

Tests and servers build apps from explicit settings; the blueprints are
module-level and find the app's context and task service on the app.
"""
from __future__ import annotations

import typing as t

from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api

from httpqueue import __version__, context, jsoncodec
from httpqueue.api import auth, compat, dashboard, errors, export, nodes, ops, schedules, topics, v1
from httpqueue.api.base import CONTEXT_KEY, SERVICE_KEY, bind_app, unbind_app
from httpqueue.api.schemas import ApiErrorSchema, bind_settings, unbind_settings
from httpqueue.celery import app as celery_app
from httpqueue.config import Settings
from httpqueue.publish import Publisher
from httpqueue.services import TaskService


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask application for ``settings`` (default: from the environment)."""
    ctx = context.Context(settings) if settings is not None else context.current()
    if settings is not None and not context.installed():
        context.install(settings)  # Celery's configuration reads the process's context
    s = ctx.settings
    app = HttpqueueFlask("httpqueue")
    app.settings = s
    app.json = JsonProvider(app)
    app.extensions[CONTEXT_KEY] = ctx
    app.extensions[SERVICE_KEY] = TaskService(ctx, Publisher(celery_app))
    app.extensions[ops.BROKER_KEY] = celery_app
    app.config.update(
        MAX_CONTENT_LENGTH=s.max_body, API_TITLE="httpqueue", API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3", OPENAPI_URL_PREFIX="/", OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"info": {"description": "Delayed HTTP callbacks with retries; the original Go "
                                                  "httpqueue's API (`/create`, `/delete`, `/query`) and `/v1`."}},
    )
    api = HttpqueueApi(app)
    token = bind_settings(s)
    try:  # the schemas' limits are this app's settings, in the OpenAPI document too
        with app.app_context():
            for module in (compat, ops, v1, topics, schedules, nodes, export):
                api.register_blueprint(module.blp)
    finally:
        unbind_settings(token)
    app.register_blueprint(dashboard.blp)
    errors.register(app)
    ops.install(app)  # the no-worker Warning header on create answers
    auth.install(app, s.api_tokens, errors.unauthorized)
    return app


class HttpqueueApi(Api):
    """flask-smorest's Api, documenting httpqueue's own error document as every operation's default answer."""

    ERROR_SCHEMA = ApiErrorSchema


class JsonProvider(DefaultJSONProvider):
    """Answers encoded by orjson (:mod:`httpqueue.jsoncodec`): a batch's thousand results, a page of tasks."""

    def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
        return jsoncodec.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
        return jsoncodec.loads(s)

    def response(self, *args: t.Any, **kwargs: t.Any) -> Response:
        body = jsoncodec.dumps(self._prepare_response_obj(args, kwargs))
        response_class = t.cast("type[Response]", self._app.response_class)
        return response_class(body, mimetype=self.mimetype)


class HttpqueueFlask(Flask):
    """Flask, with this app's settings bound for each request's validation (:func:`~httpqueue.api.schemas.current_settings`).

    The binding wraps the WSGI call rather than using ``before_request`` and
    ``teardown_request`` hooks: on the create path two hooks and ``g`` cost
    more than the binding itself. The app itself is bound too, for the views'
    :func:`~httpqueue.api.base.service` and :func:`~httpqueue.api.base.ctx`.
    """

    settings: Settings

    def wsgi_app(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        token, app_token = bind_settings(self.settings), bind_app(self)
        try:
            return super().wsgi_app(environ, start_response)
        finally:
            unbind_app(app_token)
            unbind_settings(token)
