"""``create_app``: the Flask application for one set of settings (Flask's application factory).

Tests and servers build apps from explicit settings; the blueprints are
module-level and find the app's context and task service on the app.
"""
from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from httpqueue import __version__, context
from httpqueue.api import auth, compat, dashboard, errors, ops, schedules, topics, v1
from httpqueue.api.base import CONTEXT_KEY, SERVICE_KEY
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
    app = Flask("httpqueue")
    app.extensions[CONTEXT_KEY] = ctx
    app.extensions[SERVICE_KEY] = TaskService(ctx, Publisher(celery_app))
    app.extensions[ops.BROKER_KEY] = celery_app
    app.config.update(
        MAX_CONTENT_LENGTH=s.max_body, API_TITLE="httpqueue", API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3", OPENAPI_URL_PREFIX="/", OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"info": {"description": "Delayed HTTP callbacks with retries; the original Go "
                                                  "httpqueue's API (`/create`, `/delete`, `/query`) and `/v1`."}},
    )
    api = Api(app)
    with app.app_context():  # the schemas' limits are this app's settings, in the OpenAPI document too
        for module in (compat, ops, v1, topics, schedules):
            api.register_blueprint(module.blp)
    app.register_blueprint(dashboard.blp)
    errors.register(app)
    ops.install(app)  # the no-worker Warning header on create answers
    auth.install(app, s.api_tokens, errors.unauthorized)
    return app
