"""RabbitMQ as the Celery broker: quorum queues, publisher confirms, native delayed delivery.

With ``HTTPQUEUE_BROKER_URL=amqp://...`` delivery messages travel on a quorum
queue (replicated, durable) behind a topic exchange, every publish waits for
the broker's confirm, and a message due later is not held in worker memory:
Celery's *native delayed delivery* (Celery 5.5+, kombu's
``native_delayed_delivery``) parks it in 28 levels of queues whose message
TTLs are powers of two seconds, dead-lettering level by level down to the
real queue. Both the producers (API, promoter) and the workers must use the
same queue settings: it is the *producer* that routes a message through the
delay levels, by looking at its own queue configuration.

Native delayed delivery counts whole seconds only (kombu's
``calculate_routing_key``: the countdown is truncated with ``int()`` and
refuses anything under 1 s). httpqueue keeps its millisecond precision by
splitting each wait (:func:`split_wait`): the broker holds the whole seconds,
and the rest (under a second) travels in the message as the tasks' offsets,
which the worker waits out after the message arrives, the same way it already
spaces the tasks of one message. No message then carries a Celery ETA: a
worker never holds a message unacknowledged while it waits, which matters
twice on RabbitMQ: an ETA message occupies one of the consumer's prefetch
places until it is due (quorum queues have no global QoS, so Celery cannot
raise the prefetch for it), and a message unacknowledged for longer than the
broker's ``consumer_timeout`` (30 min by default) closes the channel.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
import typing as t
from urllib.parse import urlsplit

from celery.utils.quorum_queues import detect_quorum_queues
from kombu.transport.native_delayed_delivery import (
    MAX_LEVEL,
    bind_queue_to_native_delayed_delivery_exchange,
    calculate_routing_key,
    declare_native_delayed_delivery_exchanges_and_queues,
    level_name,
)

from httpqueue.config import AMQP_SCHEMES

CONFIRM_TIMEOUT = 5.0
"""Seconds a publish waits for the broker's confirm before it counts as failed (never hangs)."""

CONFIRM_TIMEOUT_PER_MESSAGE = 0.01
"""Seconds added to :data:`CONFIRM_TIMEOUT` per message of a batch whose confirms are awaited together
(1,000 delayed messages took 3.5 s to be confirmed on 2 busy cores)."""

MAX_DELAY_S = 2 ** (MAX_LEVEL + 1) - 1
"""Longest whole-second wait the delay levels can hold (about 8.5 years)."""


def is_amqp(url: str) -> bool:
    """Whether a broker URL names RabbitMQ (kombu's ``amqp``, ``amqps`` or ``pyamqp`` transports)."""
    return urlsplit(url).scheme.lower() in AMQP_SCHEMES


def celery_settings() -> dict[str, t.Any]:
    """The Celery settings of an amqp broker, on top of httpqueue's common ones.

    ``task_default_queue_type="quorum"`` is what switches native delayed
    delivery on (Celery's ``detect_quorum_queues``), and it needs a topic
    exchange (a direct one only logs a warning and delays nothing).
    ``confirm_publish`` makes a publish return only once the broker has taken
    the message, so a create answered 200 or a promoter pass that published
    did not lose it in a socket buffer.
    """
    return {
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        "broker_native_delayed_delivery_queue_type": "quorum",
        "broker_transport_options": {"confirm_publish": True},
        "worker_detect_quorum_queues": True,
    }


@dataclasses.dataclass(frozen=True)
class Split:
    """A wait cut for native delayed delivery: ``seconds`` in the broker, then ``rest_ms`` in the worker."""

    seconds: int
    rest_ms: int


def split_wait(wait_ms: int) -> Split:
    """Whole seconds for the broker's delay levels, the remainder (0-999 ms) for the worker.

    Under a second there is nothing for the broker to hold (kombu refuses a
    countdown below 1 s): the message goes out at once and the worker waits
    the whole of it. Waits longer than the levels hold cannot happen within a
    timer horizon; they are capped, and the store's lease would re-issue such a
    task anyway.
    """
    if wait_ms < 1000:
        return Split(0, max(0, wait_ms))
    seconds = min(wait_ms // 1000, MAX_DELAY_S)
    return Split(seconds, wait_ms - seconds * 1000)


def delayed_route(seconds: int, routing_key: str) -> dict[str, str]:
    """``send_task`` options that send a message through the delay levels for ``seconds``.

    The same exchange and routing key Celery's ``send_task`` builds from a
    countdown (the highest level's exchange, the binary digits of the wait in
    front of the queue's routing key), without the ETA header a countdown adds:
    the message arrives due, and its remaining offsets say when each task fires.
    """
    return {"exchange": level_name(MAX_LEVEL), "routing_key": calculate_routing_key(seconds, routing_key)}


def native_delayed(app: t.Any) -> bool:
    """Whether ``app`` publishes through native delayed delivery: an amqp broker and a quorum queue.

    The very test Celery's ``send_task`` and its ``DelayedDelivery`` worker
    step make (``celery.utils.quorum_queues.detect_quorum_queues``), read from
    the configuration only, so it opens no connection.
    """
    if not is_amqp(app.conf.broker_url or ""):
        return False
    return detect_quorum_queues(app, "amqp")[0]


class Topology:
    """Declares the delay levels and binds the delivery queue to them, once per process.

    A worker's ``DelayedDelivery`` step declares them when it starts consuming,
    but an API or a promoter may publish a delayed message first (a fresh
    vhost, or the API started before any worker): the message would enter a
    level that does not exist (the publish fails) or leave the last level with
    no binding to the queue, where RabbitMQ drops it silently. So the producer
    makes sure before its first delayed publish. Declaring is idempotent;
    a failure (broker away) raises and is tried again by the next publish.
    """

    def __init__(self) -> None:
        self._ready: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._renew_lock)

    def _renew_lock(self) -> None:
        """A prefork child forked while the promoter declared (about a second) must not inherit the lock held."""
        self._lock = threading.Lock()

    def ensure(self, app: t.Any, queue_name: str) -> None:
        """Declare the delay levels and the queue's bindings unless this process already did."""
        key = (os.getpid(), queue_name)
        if key in self._ready:
            return
        with self._lock:
            if key in self._ready:
                return
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
                declare_native_delayed_delivery_exchanges_and_queues(
                    connection, app.conf.broker_native_delayed_delivery_queue_type)
                queue = app.amqp.queues[queue_name]
                queue.bind(connection.default_channel).declare()
                bind_queue_to_native_delayed_delivery_exchange(connection, queue)
            self._ready.add(key)


topology = Topology()
"""This process's record of the delay topology it has declared."""


class ConfirmsNotReceived(Exception):
    """RabbitMQ refused (nack) or did not confirm in time some messages of a batch."""


class Confirms:
    """Publisher confirms of a batch on a channel of its own, waited for together.

    With ``confirm_publish`` py-amqp waits for each message's confirm before
    sending the next; on a quorum queue a confirm comes once the message is on
    disk on a majority, about 5-7 ms here, which capped a promoter at ~150
    messages per second. This puts a fresh channel in confirm mode, sends
    the whole batch, then waits for the confirms of every delivery tag (1 to n
    on a new channel, in the order sent), which RabbitMQ sends for many
    messages at once.
    """

    def __init__(self, channel: t.Any) -> None:
        self.channel = channel
        self.sent = 0
        self.upto = 0  # every delivery tag up to here is confirmed
        self.acked: set[int] = set()
        self.nacked = False
        channel.confirm_select()
        channel._confirm_selected = True
        channel.basic_publish = self._publish  # kombu's Producer calls channel.basic_publish
        channel.events["basic_ack"].add(self._ack)
        channel.events["basic_nack"].add(self._nack)

    def _publish(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        kwargs.pop("confirm_timeout", None)
        result = self.channel._basic_publish(*args, **kwargs)
        self.sent += 1
        return result

    def _ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self.upto = max(self.upto, delivery_tag)
        else:
            self.acked.add(delivery_tag)
        while self.upto + 1 in self.acked:
            self.upto += 1
            self.acked.discard(self.upto)

    def _nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked = True

    def confirmed(self, delivery_tag: int) -> bool:
        """Whether the message sent ``delivery_tag``-th (from 1) is confirmed (none is, after a nack)."""
        return not self.nacked and (delivery_tag <= self.upto or delivery_tag in self.acked)

    def wait(self, timeout: float) -> None:
        """Return once every message sent is confirmed; raise :class:`ConfirmsNotReceived` otherwise."""
        deadline = time.monotonic() + timeout
        while self.upto < self.sent and not self.nacked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfirmsNotReceived(f"{self.sent - self.upto} of {self.sent} messages unconfirmed")
            try:
                self.channel.connection.drain_events(timeout=remaining)
            except TimeoutError:  # socket.timeout: the loop checks the deadline
                pass
        if self.nacked:
            raise ConfirmsNotReceived("RabbitMQ refused (nack) a message of the batch")


Send = t.Mapping[str, t.Any]
"""The ``send_task`` keyword arguments of one message."""

Item = t.TypeVar("Item")


def publish_confirmed_together(app: t.Any, task_name: str, items: t.Sequence[Item],
                               send_of: t.Callable[[Item], Send]) -> list[Item]:
    """``app.send_task(task_name, **send_of(item))`` for each item, then wait for all their confirms at once.

    Returns the items whose confirm did not come (all of them if the channel
    could not be opened); the caller sends those again one at a time, with
    kombu's retries. No retry in here: kombu's would revive the producer on
    another channel and lose the count. A message sent again may then be in
    the queue twice; the store's claim takes the task once and refuses the
    other copy. ``send_of`` is called just before each send (a message's wait
    is worked out then).
    """
    confirms: Confirms | None = None
    with app.producer_or_acquire() as pooled:
        channel = None
        try:
            channel = pooled.connection.channel()
            confirms = Confirms(channel)
            producer = app.amqp.Producer(channel, auto_declare=False)
            for item in items:
                app.send_task(task_name, producer=producer, retry=False, **send_of(item))
            confirms.wait(CONFIRM_TIMEOUT + CONFIRM_TIMEOUT_PER_MESSAGE * len(items))
            return []
        except Exception:  # noqa: BLE001 - whatever broke, the unconfirmed messages are sent again
            if confirms is None:
                return list(items)
            return [item for tag, item in enumerate(items, start=1) if not confirms.confirmed(tag)]
        finally:
            try:
                if channel is not None:
                    channel.close()
            except Exception:  # noqa: BLE001 - a broken channel may fail to close; the connection cleans up
                pass
