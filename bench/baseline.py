"""The plain-Celery baseline: what httpqueue is measured against, in the same run.

A minimal Celery app with one task that POSTs to the callback receiver with
``requests`` (one session per pool process), fed with
``apply_async(countdown=...)`` like any Celery user would, and run by a prefork
worker with as many processes as the machine has cores. Everything is Celery's
default (prefetch, acks, logging at WARNING) except that results are ignored,
as a fire-and-forget callback needs none. It sends the same ``X-Httpqueue-Due``
and ``X-Httpqueue-Id`` headers as httpqueue, so the receiver measures both alike.

The broker is the bench Redis, database 2 (``BENCH_BROKER_URL``).
"""
from __future__ import annotations

import os
import typing as t

import requests
from celery import Celery

QUEUE = "bench_baseline"

app = Celery("bench_baseline", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "memory://"),
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)

_session: requests.Session | None = None


def session() -> requests.Session:
    """One keep-alive session per pool process (created after the fork)."""
    global _session
    if _session is None:
        _session = requests.Session()
    return _session


@app.task(name="bench.post")
def post(url: str, task_id: str, due_ms: int, content: t.Any = None) -> int:
    """POST the callback, as a plain Celery user would write it."""
    response = session().post(url, json={"id": task_id, "topic": "baseline", "content": content},
                              headers={"X-Httpqueue-Id": task_id, "X-Httpqueue-Due": str(due_ms)}, timeout=10)
    return response.status_code


def configure(broker_url: str) -> Celery:
    """Point the driver's side of the app at the run's broker (before the first publish)."""
    app.conf.broker_url = broker_url
    return app
