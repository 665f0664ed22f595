"""A Python client of the httpqueue API, sync (:class:`Client`) and asyncio (:class:`AsyncClient`).

::

    from httpqueue.client import Client

    with Client() as hq:   # HTTPQUEUE_URL, HTTPQUEUE_TOKEN
        task = hq.create("order", "https://example.com/hook", {"order": 4711}, delay=60)

Every operation of the API has a method (``calls.OPERATIONS`` lists them);
results are dataclasses (:mod:`httpqueue.client.models`) and failures
exceptions under :class:`ApiError` (:mod:`httpqueue.client.errors`). The
client imports nothing of the server: it is for other programs.
"""
from __future__ import annotations

from httpqueue.client.aio import AsyncClient
from httpqueue.client.calls import BATCH_MAX, KEEP, OPERATIONS
from httpqueue.client.errors import (
    ApiError, Conflict, ConnectionFailed, InvalidRequest, NotFound, PayloadTooLarge, ServerError, Unauthorized,
    Unavailable,
)
from httpqueue.client.models import (
    BatchResult, Changed, Circuit, Created, Event, ExportConsumer, ExportSink, ExportStatus, HttpMethod, Minute,
    Node, Options, Readiness, RetryPolicy,
    Schedule, State, Stats, Status, SuccessRule, Task, TaskPage, TaskSpec, Topic,
)
from httpqueue.client.sync import Client
from httpqueue.client.transport import Retries

__all__ = [
    "BATCH_MAX", "KEEP", "OPERATIONS", "ApiError", "AsyncClient", "BatchResult", "Changed", "Circuit", "Client",
    "Conflict", "ConnectionFailed", "Created", "Event", "ExportConsumer", "ExportSink", "ExportStatus",
    "HttpMethod", "InvalidRequest", "Minute", "Node", "NotFound",
    "Options", "PayloadTooLarge", "Readiness", "Retries", "RetryPolicy", "Schedule", "ServerError", "State",
    "Stats", "Status", "SuccessRule", "Task", "TaskPage", "TaskSpec", "Topic", "Unauthorized", "Unavailable",
]
