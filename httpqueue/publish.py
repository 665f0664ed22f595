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

How a message waits depends on the broker. On Redis it carries a Celery
countdown and the worker holds it until due (within the timer horizon). On
RabbitMQ with quorum queues it waits in the broker's delay levels for the
whole seconds of its wait and the worker waits out the rest, under a second,
through the tasks' offsets (:mod:`httpqueue.rabbitmq`).
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import time
import typing as t

from httpqueue import events, rabbitmq
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


@dataclasses.dataclass(frozen=True)
class Message:
    """One delivery message as it is sent: its tasks with their offsets, and how long it waits."""

    items: list[list[t.Any]]
    """``[task_id, generation, offset_ms]`` per task: when the worker starts it, after the message arrives."""
    countdown: float | None = None
    """Seconds Celery holds the message before it runs (a Celery ETA), or None."""
    delay_s: int = 0
    """Whole seconds the message waits in RabbitMQ's delay levels (native delayed delivery), or 0."""


LEAD_MS = 50
"""How much earlier than its earliest task a Celery ETA message is due.

Between a message's ETA and the start of its first attempt lie the worker's
timer, the hand-off to a pool process and the claim in Redis: a few ms on an
idle box, tens of ms on a busy one (the lateness at 500 creates/s was mostly
this). Due ``LEAD_MS`` early, the message reaches the pool process before its
tasks are due, and the attempts start at their own times, counted from the
message's ETA (:func:`httpqueue.worker.tasks.deliver`), not from when the pool
got it. The cost: a task is claimed (and can no longer be deleted) up to this
long before it is due."""


def eta_seconds(eta: str | datetime.datetime | None) -> float | None:
    """A Celery message's ETA (an ISO 8601 string or a datetime; naive means UTC) in seconds since the epoch."""
    if not eta:
        return None
    when = eta if isinstance(eta, datetime.datetime) else datetime.datetime.fromisoformat(eta)
    if when.tzinfo is None:  # Celery's ETAs are UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def celery_eta_message(group: t.Sequence[Dispatch], clock_ms: int) -> Message:
    """A message that waits as a Celery ETA until :data:`LEAD_MS` before its earliest task; offsets count from then."""
    first = group[0]  # the earliest: groups are sorted by due time
    wait_ms = max(0, first.due_ms - LEAD_MS - clock_ms)
    starts_ms = clock_ms + wait_ms
    items = [[d.task_id, d.gen, max(0, d.due_ms - starts_ms)] for d in group]
    return Message(items, countdown=wait_ms / 1000 if wait_ms > 1 else None)


def native_delayed_message(group: t.Sequence[Dispatch], clock_ms: int) -> Message:
    """A message that waits whole seconds in the broker; offsets count from its arrival, to the millisecond.

    The broker's delay levels cannot hold a fraction of a second, so the
    message arrives up to a second before its earliest task and every offset
    includes what remains. It never arrives early: a level's TTL only runs
    out, it is never cut short; it arrives a few ms late (each level it passes
    adds its hop), and later if it waits in the queue behind others.
    """
    split = rabbitmq.split_wait(group[0].due_ms - clock_ms)
    arrives_ms = clock_ms + split.seconds * 1000
    items = [[d.task_id, d.gen, max(0, d.due_ms - arrives_ms)] for d in group]
    return Message(items, delay_s=split.seconds)


class Publisher:
    """Sends dispatches as delivery messages through a Celery app."""

    def __init__(self, app: t.Any) -> None:
        self.app = app
        self._native: bool | None = None

    @property
    def native_delayed(self) -> bool:
        """Whether waits go to RabbitMQ's delay levels (decided from the app's queues, once)."""
        if self._native is None:
            self._native = rabbitmq.native_delayed(self.app)
        return self._native

    def __call__(self, dispatches: t.Sequence[Dispatch], clock_ms: int) -> int:
        """Send the dispatches, each due ``due_ms - clock_ms`` from now; returns the number of messages.

        The wait is relative to the caller's clock (not an absolute ETA), so a
        promoter running on an injected clock in tests still publishes on time.
        Each message's wait is worked out just before it is sent, from that
        clock moved on by the real time spent publishing: on RabbitMQ, sending
        a pass's messages (and declaring the delay levels, the first time)
        can take seconds, which would otherwise make the last ones that late.
        """
        groups = group_dispatches(dispatches)
        if not groups:
            return 0
        called = time.monotonic()
        build = native_delayed_message if self.native_delayed else celery_eta_message
        if self.native_delayed and any(group[0].due_ms - clock_ms >= 1000 for group in groups):
            rabbitmq.topology.ensure(self.app, QUEUE)

        def send_of(group: t.Sequence[Dispatch]) -> rabbitmq.Send:
            return self._send_of(group, build(group, clock_ms + int((time.monotonic() - called) * 1000)))

        rest: t.Sequence[t.Sequence[Dispatch]] = groups
        if len(groups) > 1 and rabbitmq.is_amqp(self.app.conf.broker_url or ""):
            rest = rabbitmq.publish_confirmed_together(self.app, DELIVER_TASK, groups, send_of)
            if rest:  # sent again one by one; a task whose message arrives twice is claimed once
                events.emit("publish_retried", logging.WARNING, count=len(rest), of=len(groups))
        if rest:
            with self.app.producer_or_acquire() as producer, producer.batch(PUBLISH_BATCH):
                for group in rest:
                    self.app.send_task(DELIVER_TASK, producer=producer, **send_of(group))
        return len(groups)

    def _send_of(self, group: t.Sequence[Dispatch], message: Message) -> dict[str, t.Any]:
        """The ``send_task`` arguments of one delivery message (all but the task name and the producer)."""
        first = group[0]
        send: dict[str, t.Any] = {
            "args": (message.items,), "kwargs": {"topic": first.topic}, "countdown": message.countdown,
            "task_id": f"{first.task_id}:{first.gen}" + (f"+{len(group) - 1}" if len(group) > 1 else ""),
            "shadow": message_name(group)}
        send.update(self._delayed(message.delay_s) if message.delay_s else {"queue": QUEUE})
        if rabbitmq.is_amqp(self.app.conf.broker_url or ""):  # confirms on: bound the wait for each
            send["confirm_timeout"] = rabbitmq.CONFIRM_TIMEOUT
        return send

    def _delayed(self, seconds: int) -> dict[str, t.Any]:
        return rabbitmq.delayed_route(seconds, self.app.amqp.queues[QUEUE].routing_key)

    def notify_failure(self, task_id: str, url: str) -> None:
        """Ask a worker to send the failure notification of ``task_id`` to ``url``."""
        self.app.send_task(NOTIFY_TASK, args=(task_id, url), queue=QUEUE)
