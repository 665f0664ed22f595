"""Operations endpoints: liveness, readiness, status and Prometheus metrics.

``/ready`` means "a task created now will fire": Redis and the broker answer
*and* a worker (with its promoter) reported in recently. Without a worker the
API still stores tasks, so creates keep answering, but they carry a
``Warning`` header (:func:`install`) and the dashboard shows a banner (it reads
``/status``), so a missing worker cannot go unnoticed.
"""
from __future__ import annotations

import dataclasses
import time
import typing as t

import redis
from flask import Flask, Response, current_app, jsonify

from httpqueue import health as checks
from httpqueue import metrics
from httpqueue.api.base import CONTEXT_KEY, ApiBlueprint, ctx, extensions
from httpqueue.api.schemas import ApiErrorSchema
from httpqueue.exceptions import BrokerUnavailable, StoreUnavailable

blp = ApiBlueprint("operations", __name__, description="Health, readiness, status and metrics")

BROKER_KEY = "httpqueue.broker"
"""Where create_app keeps the Celery app whose broker /ready checks."""

WATCH_KEY = "httpqueue.worker_watch"
"""Where :func:`install` keeps the app's :class:`~httpqueue.health.WorkerWatch` (cached liveness)."""

CREATE_ROUTES = frozenset({("POST", "/create"), ("POST", "/v1/tasks"), ("POST", "/v1/tasks/batch")})
"""The requests that store tasks, whose answers carry the no-worker ``Warning`` header: each of these views
calls :func:`warn_without_worker` (``tests/integration/test_readiness.py`` creates through all three)."""


@blp.route("/health", methods=["GET"])
@blp.response(200, description="The process is alive.")
def health() -> dict[str, str]:
    """Liveness: answers as long as the process serves requests."""
    return {"status": "ok"}


@blp.route("/ready", methods=["GET"])
@blp.response(200, description="Redis and the broker answer and a worker is alive. `warnings` (only when "
                               "there are any) names risks that do not stop tasks from firing, such as a "
                               "Redis without persistence.")
@blp.alt_response(503, schema=ApiErrorSchema, description="Redis or the broker does not answer, or no worker is "
                                                          "running (`problems` says so; tasks would not fire).")
def ready() -> t.Any:
    """Readiness: the task store and the broker answer, and a worker with its promoter is alive."""
    report = _report()
    if not report.ready:
        body: dict[str, t.Any] = {"code": 503, "error": "; ".join(report.problems), "status": "not ready",
                                  "problems": list(report.problems), "workers": report.workers}
        if report.warnings:
            body["warnings"] = list(report.warnings)
        response = jsonify(body)
        response.status_code = 503
        return response
    return {"status": "ready", **({"warnings": list(report.warnings)} if report.warnings else {})}


@blp.route("/status", methods=["GET"])
@blp.response(200, description="Workers, persistence, overdue tasks, problems and warnings.")
@blp.alt_response(503, schema=ApiErrorSchema, description="Redis or the broker does not answer.")
def status() -> dict[str, t.Any]:
    """What the dashboard shows above everything: is a worker running, how late are tasks, is Redis persistent.

    Always 200 while Redis answers, so a page can render "no worker" instead of
    an error; ``ready`` is what ``/ready`` decides.
    """
    report = _report()
    now = int(time.time() * 1000)
    late = checks.overdue(ctx().store.redis, ctx().keys, now)
    return {"ready": report.ready, "workers": report.workers, "persistence": report.persistence,
            "problems": list(report.problems), "warnings": list(report.warnings),
            "overdue": {"tasks": late.count, "oldest_due_ms": late.oldest_due_ms,
                        "oldest_seconds": round(late.lag_seconds(now), 3)}}


@blp.route("/metrics", methods=["GET"])
@blp.doc(responses={200: {"description": "Prometheus text format.", "content": {"text/plain": {}}}})
def metrics_endpoint() -> t.Any:
    """Prometheus metrics: this host's API and worker processes, and task counts from Redis."""
    body, content_type = metrics.exposition(ctx())
    return current_app.response_class(body, mimetype=None, content_type=content_type)


def _report() -> checks.Report:
    """Redis (ping), the broker, workers and persistence; Redis or broker away raises (503)."""
    store = ctx().store
    store.ping()
    broker_reachable(current_app.extensions[BROKER_KEY])
    try:
        report = checks.check(store.redis, ctx().keys)
    except redis.RedisError as exc:
        raise StoreUnavailable(f"the task store (Redis) is unavailable: {exc}") from exc
    if ctx().warnings():  # etcd away: settings are last-known, delivery goes on, so a warning, not a problem
        report = dataclasses.replace(report, warnings=(*report.warnings, *ctx().warnings()))
    return report


def broker_reachable(celery_app: t.Any, timeout: float = 2.0) -> None:
    """Raise :class:`BrokerUnavailable` (503) if the Celery broker does not answer within ``timeout``."""
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises many kinds: all mean "not ready"
        raise BrokerUnavailable(f"the Celery broker is unavailable: {exc}") from exc


def install(app: Flask) -> None:
    """Watch for a worker on behalf of the create answers of ``app`` (:func:`warn_without_worker`).

    Liveness is read through a :class:`~httpqueue.health.WorkerWatch`, so the
    hot create path pays at most one Redis call per second per process, and a
    Redis error there never fails a create that already succeeded.
    """
    context = app.extensions[CONTEXT_KEY]
    app.extensions[WATCH_KEY] = checks.WorkerWatch(lambda: context.store.redis, context.keys)


def warn_without_worker(response: Response) -> Response:
    """``response`` (a successful create's) with the no-worker ``Warning`` header if no worker is alive.

    The create views (:data:`CREATE_ROUTES`) call it on their answer; an
    ``after_request`` hook did the same for every request, at a cost on each.
    """
    if response.status_code < 300 and extensions()[WATCH_KEY].alive() is False:
        response.headers.add("Warning", checks.NO_WORKER_WARNING)
    return response
