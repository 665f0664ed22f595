"""Publishing delivery messages: the contract between whoever hands tasks to Celery and the worker.

The API (due-soon creates), the promoter and the scheduler publish; the worker's
``deliver`` task consumes. Messages are sent by task *name* through the Celery
app given to :class:`Publisher`, so nothing here imports the worker's task
module (the Celery layout: the app names its task modules with ``include=``
and is never imported back by them for wiring).

A message says "deliver these tasks (id, generation, offset), all of one topic
and due together". One message carries up to :data:`MAX_BATCH` tasks because
Celery's per-message cost (publish, receive, task events, ack) dwarfs an HTTP
POST on loopback: batching is what lets a worker outrun plain Celery.
"""
from __future__ import annotations

import typing as t

from httpqueue.store.records import Dispatch

DELIVER_TASK = "httpqueue.deliver"
"""Name of the Celery task that attempts the callbacks of one message."""

NOTIFY_TASK = "httpqueue.notify_failure"
"""Name of the Celery task that sends one failure notification."""

QUEUE = "httpqueue"
"""The broker queue delivery messages travel on."""

MAX_BATCH = 128
"""Most tasks one delivery message carries.

Celery's cost per message (the worker's receive, ETA timer, hand-off to the
pool, task events, ack) is shared by its tasks: with 32 the worker's main
process spent about 25 us of CPU per callback, with 128 about 10
(docs/benchmarks.rst). It only matters when that many tasks of a topic are due
within :data:`BATCH_WINDOW_MS`; the callbacks of a message still go out
concurrently, each at its own time."""

BATCH_WINDOW_MS = 100
"""Tasks of one topic due within this many ms of each other share a message.

The message is due at the earliest of them; the worker then starts each
attempt at its own offset, so batching costs no precision: each callback
still starts within milliseconds of its due time."""

PUBLISH_BATCH = 512
"""Broker commands pipelined per round trip when publishing many messages (kombu's Producer.batch)."""

Publish = t.Callable[[t.Sequence[Dispatch], int], int]
"""Anything that publishes dispatches relative to a clock (``Publisher``, or a test's recorder)."""


def group_dispatches(dispatches: t.Iterable[Dispatch], window_ms: int = BATCH_WINDOW_MS,
                     limit: int = MAX_BATCH) -> list[list[Dispatch]]:
    """Split dispatches into messages: one topic each, due within ``window_ms``, at most ``limit``."""
    groups: list[list[Dispatch]] = []
    for d in sorted(dispatches, key=lambda d: (d.topic, d.due_ms)):
        current = groups[-1] if groups else None
        if (current and current[0].topic == d.topic and len(current) < limit
                and d.due_ms - current[0].due_ms <= window_ms):
            current.append(d)
        else:
            groups.append([d])
    return groups


def message_name(group: t.Sequence[Dispatch]) -> str:
    """What Flower and ``celery events`` show for a message: the topic and how many tasks it carries.

    Celery's ``shadow`` name: a delivery message is a batch of callbacks, so a
    bare "httpqueue.deliver" would say nothing about which tasks it carried.
    The task ids are in the message's args (and the first one in its Celery
    task id); the worker's final event for the message names each task with
    its outcome (see :mod:`httpqueue.worker.tasks`).
    """
    return f"deliver {group[0].topic or '-'} x{len(group)}"


class Publisher:
    """Sends dispatches as delivery messages through a Celery app."""

    def __init__(self, app: t.Any) -> None:
        self.app = app

    def __call__(self, dispatches: t.Sequence[Dispatch], clock_ms: int) -> int:
        """Send the dispatches, each due ``due_ms - clock_ms`` from now; returns the number of messages.

        The wait is relative to the caller's clock (not an absolute ETA), so a
        promoter running on an injected clock in tests still publishes on time.
        """
        groups = group_dispatches(dispatches)
        if not groups:
            return 0
        with self.app.producer_or_acquire() as producer, producer.batch(PUBLISH_BATCH):
            for group in groups:
                first = group[0]  # the earliest: groups are sorted by due time
                wait = (first.due_ms - clock_ms) / 1000
                message_id = f"{first.task_id}:{first.gen}" + (f"+{len(group) - 1}" if len(group) > 1 else "")
                items = [[d.task_id, d.gen, max(0, d.due_ms - max(first.due_ms, clock_ms))] for d in group]
                self.app.send_task(
                    DELIVER_TASK, args=(items,), kwargs={"topic": first.topic}, queue=QUEUE,
                    countdown=wait if wait > 0.001 else None, task_id=message_id, producer=producer,
                    shadow=message_name(group))
        return len(groups)

    def notify_failure(self, task_id: str, url: str) -> None:
        """Ask a worker to send the failure notification of ``task_id`` to ``url``."""
        self.app.send_task(NOTIFY_TASK, args=(task_id, url), queue=QUEUE)
