"""The asyncio client, :class:`AsyncClient`: the methods of :class:`~httpqueue.client.sync.Client`, awaited."""
from __future__ import annotations

import os
import asyncio
import typing as t

import httpx

from httpqueue.client import calls
from httpqueue.client.calls import KEEP, Call, Keep
from httpqueue.client.errors import ApiError
from httpqueue.client.models import (
    BatchResult, Changed, Created, Event, ExportStatus, Minute, Node, Options, Readiness, Schedule, Stats, Status,
    Task, TaskPage,
    TaskSpec, Topic, When,
)
from httpqueue.client.transport import (
    DEFAULT_TIMEOUT, Endpoint, Retries, connection_failed, may_resend, read, request_args,
)
from httpqueue.states import State

T = t.TypeVar("T")


class AsyncClient:
    """An asyncio client of one httpqueue API (see :class:`~httpqueue.client.sync.Client`).

    ``url`` and ``token`` default to ``HTTPQUEUE_URL`` and ``HTTPQUEUE_TOKEN``.
    Creates carry an Idempotency-Key (the caller's, or a fresh one), so when
    the API answers 503 or the connection fails they are sent again, up to
    ``retries``, and never make two tasks. Use it as a context manager, or
    call :meth:`close`, to release its connections.
    """

    def __init__(self, url: str | None = None, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 retries: Retries = Retries(), environ: t.Mapping[str, str] = os.environ,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        endpoint = Endpoint.resolve(url, token, environ)
        self.url = endpoint.url
        self.retries = retries
        self._http = httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers, timeout=timeout,
                                  transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        """Send ``call``, again after a 503 or a connection error while that is safe (see :class:`Retries`)."""
        for resent in range(self.retries.attempts):
            try:
                return await self._once(call)
            except ApiError as error:
                if resent + 1 >= self.retries.attempts or not may_resend(call, error):
                    raise
                await asyncio.sleep(self.retries.wait(resent, getattr(error, "retry_after", None)))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(**request_args(call))
        except httpx.TransportError as exc:
            raise connection_failed(exc) from exc
        return read(call, response)

    # -- tasks

    async def create(self, topic: str, callback: str, content: t.Any = "", *, delay: float | None = None,
               execute_at: When | None = None, retry: int = 0, id: str | None = None,
               options: Options | None = None, idempotency_key: str | None = None) -> Task:
        """Create a task (``POST /v1/tasks``): POST ``content`` to ``callback`` after ``delay`` s or at ``execute_at``.

        Safe to call again with the same ``id`` or ``idempotency_key``: the
        answer is then the first task, with ``replayed`` set.
        """
        spec = TaskSpec(topic, callback, content, delay, execute_at, retry, id, options or Options())
        return await self.create_task(spec, idempotency_key=idempotency_key)

    async def create_task(self, spec: TaskSpec, *, idempotency_key: str | None = None) -> Task:
        """:meth:`create` from a :class:`TaskSpec`."""
        return await self._send(calls.create(spec, idempotency_key))

    async def create_many(self, specs: t.Iterable[TaskSpec], *, chunk: int = calls.BATCH_MAX) -> list[BatchResult]:
        """Create many tasks, ``chunk`` per request (the API takes at most 1,000); one result per task, in order.

        Items are validated one by one: a refused item has ``error`` and
        ``fields`` and does not stop the others. Items without an id are given
        one, so a chunk sent again after a lost answer makes no task twice.
        """
        return [result for part in calls.batch_chunks(specs, chunk) for result in await self._send(calls.batch(part))]

    async def get(self, task_id: str) -> Task:
        return await self._send(calls.get(task_id))

    async def delete(self, task_id: str) -> Changed:
        """Cancel a task that has not fired yet (deleting it again answers the same); :class:`Conflict` if it
        is being delivered or has finished."""
        return await self._send(calls.delete(task_id))

    async def retry(self, task_id: str) -> Changed:
        """Attempt a failed, scheduled or retrying task now."""
        return await self._send(calls.retry(task_id))

    async def list_tasks(self, state: State | None = None, topic: str | None = None, cursor: str | None = None,
                   limit: int = 50) -> TaskPage:
        """One page of tasks; :meth:`iter_tasks` follows the cursor for you."""
        return await self._send(calls.list_tasks(state, topic, cursor, limit))

    async def iter_tasks(self, state: State | None = None, topic: str | None = None, *, page_size: int = 200,
                   max_pages: int | None = None) -> t.AsyncIterator[Task]:
        """Every matching task, page after page until the API says nothing more matches (or ``max_pages``)."""
        cursor: str | None = None
        pages = 0
        while max_pages is None or pages < max_pages:
            page = await self.list_tasks(state, topic, cursor, page_size)
            pages += 1
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def history(self, task_id: str) -> list[Event]:
        """The task's lifecycle events, oldest first."""
        return await self._send(calls.history(task_id))

    async def series(self, minutes: int = 60) -> list[Minute]:
        """Attempts per minute by outcome and lateness, oldest first."""
        return await self._send(calls.series(minutes))

    async def stats(self) -> Stats:
        return await self._send(calls.stats())

    # -- the original Go httpqueue's endpoints

    async def original_create(self, topic: str, callback: str, content: t.Any = "", *, delay: float | None = None,
                        execute_at: When | None = None, retry: int = 0, id: str | None = None,
                        options: Options | None = None, idempotency_key: str | None = None) -> Created:
        """``POST /create``: as :meth:`create`, answered with the id only (the original's answer)."""
        spec = TaskSpec(topic, callback, content, delay, execute_at, retry, id, options or Options())
        return await self._send(calls.original_create(spec, idempotency_key))

    async def original_delete(self, task_id: str) -> Changed:
        return await self._send(calls.original_delete(task_id))

    async def original_query(self, task_id: str) -> Task:
        return await self._send(calls.original_query(task_id))

    # -- topics

    async def list_topics(self) -> list[Topic]:
        return await self._send(calls.list_topics())

    async def get_topic(self, topic: str) -> Topic:
        return await self._send(calls.get_topic(topic))

    async def configure_topic(self, topic: str, *, rate_limit: float | None | Keep = KEEP,
                        concurrency: int | None | Keep = KEEP, failure_callback: str | None | Keep = KEEP) -> Topic:
        """Set the topic's limits; ``None`` clears a setting, an omitted one stays as it is."""
        return await self._send(calls.configure_topic(topic, rate_limit, concurrency, failure_callback))

    async def pause_topic(self, topic: str) -> Topic:
        """Stop starting attempts; the tasks keep their place and fire (late) after :meth:`resume_topic`."""
        return await self._send(calls.pause_topic(topic))

    async def resume_topic(self, topic: str) -> Topic:
        return await self._send(calls.resume_topic(topic))

    async def purge_topic(self, topic: str) -> int:
        """Delete every pending task of the topic; returns how many."""
        return await self._send(calls.purge_topic(topic))

    async def dead_letters(self, topic: str, cursor: str | None = None, limit: int = 50) -> TaskPage:
        """One page of the topic's tasks that failed for good, newest first."""
        return await self._send(calls.dead_letters(topic, cursor, limit))

    async def iter_dead_letters(self, topic: str, *, page_size: int = 200,
                                max_pages: int | None = None) -> t.AsyncIterator[Task]:
        cursor: str | None = None
        pages = 0
        while max_pages is None or pages < max_pages:
            page = await self.dead_letters(topic, cursor, page_size)
            pages += 1
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def replay_dead_letters(self, topic: str, ids: t.Sequence[str] | None = None) -> int:
        """Attempt dead letters again now (``ids``, or all of the topic's); returns how many."""
        return await self._send(calls.replay_dead_letters(topic, ids))

    async def delete_dead_letters(self, topic: str, ids: t.Sequence[str] | None = None) -> int:
        """Remove dead letters (``ids``, or all); returns how many."""
        return await self._send(calls.delete_dead_letters(topic, ids))

    # -- schedules

    async def create_schedule(self, cron: str, task: TaskSpec, *, id: str | None = None, timezone: str = "UTC",
                        paused: bool = False) -> Schedule:
        """Create (or, with an existing ``id``, replace) a schedule: each tick of ``cron`` creates ``task``."""
        return await self._send(calls.create_schedule(cron, task, id, timezone, paused))

    async def list_schedules(self) -> list[Schedule]:
        return await self._send(calls.list_schedules())

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return await self._send(calls.get_schedule(schedule_id))

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule; tasks it already created stay."""
        await self._send(calls.delete_schedule(schedule_id))

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return await self._send(calls.pause_schedule(schedule_id))

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        return await self._send(calls.resume_schedule(schedule_id))

    # -- operations

    async def nodes(self) -> list[Node]:
        """The live API nodes and workers."""
        return await self._send(calls.nodes())

    async def export_status(self) -> ExportStatus:
        """Per sink of the event export: events not read yet, not acknowledged, and lost to the streams' bound."""
        return await self._send(calls.export_status())

    async def health(self) -> bool:
        """Whether the API process answers (liveness)."""
        return await self._send(calls.health())

    async def ready(self) -> Readiness:
        """Whether a task created now would fire: Redis, the broker and a worker are up (never raises on 503)."""
        return await self._send(calls.ready())

    async def status(self) -> Status:
        """What the dashboard shows first: workers, persistence, overdue tasks, problems."""
        return await self._send(calls.status())

    async def metrics(self) -> str:
        """The Prometheus text exposition."""
        return await self._send(calls.metrics())
