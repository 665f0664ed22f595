"""Operations endpoints: liveness, readiness and Prometheus metrics."""
from __future__ import annotations

import typing as t

from flask import current_app

from httpqueue import metrics
from httpqueue.api.base import ApiBlueprint, ctx
from httpqueue.api.schemas import ApiErrorSchema
from httpqueue.exceptions import StoreUnavailable

blp = ApiBlueprint("operations", __name__, description="Health, readiness and metrics")

BROKER_KEY = "httpqueue.broker"
"""Where create_app keeps the Celery app whose broker /ready checks."""


@blp.route("/health", methods=["GET"])
@blp.response(200, description="The process is alive.")
def health() -> dict[str, str]:
    """Liveness: answers as long as the process serves requests."""
    return {"status": "ok"}


@blp.route("/ready", methods=["GET"])
@blp.response(200, description="Redis and the broker answer.")
@blp.alt_response(503, schema=ApiErrorSchema, description="Redis or the broker does not answer.")
def ready() -> dict[str, str]:
    """Readiness: the task store and the Celery broker answer."""
    ctx().store.ping()
    broker_reachable(current_app.extensions[BROKER_KEY])
    return {"status": "ready"}


@blp.route("/metrics", methods=["GET"])
@blp.doc(responses={200: {"description": "Prometheus text format.", "content": {"text/plain": {}}}})
def metrics_endpoint() -> t.Any:
    """Prometheus metrics: this host's API and worker processes, and task counts from Redis."""
    body, content_type = metrics.exposition(ctx())
    return current_app.response_class(body, mimetype=None, content_type=content_type)


def broker_reachable(celery_app: t.Any, timeout: float = 2.0) -> None:
    """Raise :class:`StoreUnavailable` (503) if the Celery broker does not answer within ``timeout``."""
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises many kinds: all mean "not ready"
        raise StoreUnavailable(f"the Celery broker is unavailable: {exc}") from exc
