"""The schedule ticker: a thread in every worker that creates the tasks of due cron ticks.

The ticks themselves are kept by :class:`~httpqueue.store.schedules.ScheduleStore`;
each tick's task is created through the same service as an API create
(:meth:`httpqueue.services.TaskService.tick_schedules`), so a scheduled task
is built, checked and published exactly like any other.
"""
from __future__ import annotations

import threading
import typing as t

from httpqueue import context
from httpqueue.clock import now_ms
from httpqueue.publish import Publisher
from httpqueue.services import TaskService
from httpqueue.worker.background import ThreadStep, repeat

INTERVAL = 0.25
"""Longest wait, in seconds, between two looks at the schedules (shorter with a faster promoter)."""


class SchedulerStep(ThreadStep):
    """Celery worker bootstep: a thread that creates the tasks of due schedule ticks."""

    label = "httpqueue-scheduler"

    def loop(self, worker: t.Any) -> t.Callable[[threading.Event], None]:
        ctx = context.current()
        service = TaskService(ctx, Publisher(worker.app))
        interval = min(INTERVAL, ctx.settings.promoter_interval)

        def tick() -> bool:
            service.tick_schedules(now_ms())
            return False

        return lambda stop: repeat(tick, stop, interval, "scheduler")
