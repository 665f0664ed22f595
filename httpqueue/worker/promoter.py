"""The promoter: hands parked tasks to Celery just before they are due.

Every worker runs one (a bootstep, in the worker's main process). A pass walks
the shards: ``promote`` takes the tasks due within the horizon, ``reclaim``
re-issues those whose lease ran out, and both are published as delivery
messages. Before the walk, the attempts of workers whose heartbeat stopped are
released to reclaim (see :mod:`httpqueue.nodes`), so a killed worker's attempts
are re-issued within seconds rather than when their lease runs out. The scripts
are atomic, so any number of promoters may run at once without a leader and
without handing out a task twice; a promoter killed between taking tasks and
publishing them loses nothing, because the taken tasks' leases run out and
another promoter re-issues them.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
import typing as t

import redis
from celery import signals

from httpqueue import context, events, health, nodes, rabbitmq
from httpqueue.publish import Publish, Publisher
from httpqueue.store.tasks import TaskStore
from httpqueue.worker.background import OUTAGE_ERRORS, ThreadStep, repeat
from httpqueue.worker.holds import Holds

PURGE_EVERY = 20
"""Passes between two purges of tasks past their retention."""

HEARTBEATS_PER_TTL = 5
"""Heartbeats written per heartbeat lifetime: one missed beat or two never make a live worker look dead."""

_consuming: set[str] = set()
"""Hostnames of this process's workers whose consumer is ready (Celery's ``worker_ready``)."""


@signals.worker_ready.connect(weak=False)
def _worker_ready(sender: t.Any = None, **kwargs: t.Any) -> None:
    """Note that a worker consumes its queue: only from then on does its heartbeat say it is alive.

    The promoter starts before the consumer; a heartbeat written earlier made
    ``/ready`` (and ``httpqueue run``) report ready while ETA messages had no
    consumer yet, so a task due in the first second fired late.
    """
    _consuming.add(getattr(sender, "hostname", "") or "")


@dataclasses.dataclass
class PassReport:
    """What one pass did, for metrics and tests."""

    promoted: int = 0
    reclaimed: int = 0
    released: int = 0
    purged: int = 0
    full: bool = False


class Promoter:
    """Moves due-soon tasks from the store's timer into the broker."""

    def __init__(self, store: TaskStore, publish: Publish, *, interval: float = 0.25,
                 clock: t.Callable[[], float] = time.time, name: str = "promoter",
                 heartbeat: t.Callable[[str, float], None] | None = None,
                 reap: t.Callable[[int], int] | None = None) -> None:
        self.store = store
        self.reap = reap
        self.publish = publish
        self.interval = interval
        self.clock = clock
        self.name = name
        self.heartbeat = heartbeat
        self.passes = 0
        self.last_report = PassReport()

    def run_pass(self) -> PassReport:
        """One walk over every shard, starting at a random one to spread contention.

        Everything taken in the walk is published together, so tasks of all
        shards that are due together share delivery messages.
        """
        report = PassReport()
        shards = self.store.keys.shards
        start = random.randrange(shards)
        now = int(self.clock() * 1000)
        if self.reap is not None:  # dead workers' attempts become due for this very pass's reclaim
            report.released = self.reap(now)
        taken = []
        for shard in [(start + i) % shards for i in range(shards)]:
            promoted = self.store.promote(shard, now)
            reclaimed = self.store.reclaim(shard, now)
            taken += promoted
            taken += reclaimed
            report.promoted += len(promoted)
            report.reclaimed += len(reclaimed)
            report.full = report.full or max(len(promoted), len(reclaimed)) >= self.store.batch
        if taken:  # one publish per pass, so tasks of all shards due together share messages; the waits
            # count from the clock now, not at the pass's start: Celery starts a countdown when it sends
            self.publish(taken, int(self.clock() * 1000))
        if self.passes % PURGE_EVERY == 0:
            now = int(self.clock() * 1000)
            report.purged = sum(self.store.purge(shard, now) for shard in range(shards))
        self.passes += 1
        if report.promoted:
            events.emit("promoted", logging.DEBUG, count=report.promoted, promoter=self.name)
        if report.reclaimed:
            events.emit("reclaimed", logging.WARNING, count=report.reclaimed, promoter=self.name)
        if self.heartbeat is not None:
            self.heartbeat(self.name, self.interval)
        self.last_report = report
        return report

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop`` is set; errors are logged and retried, never fatal."""
        repeat(lambda: self.run_pass().full, stop, self.interval, "promoter", promoter=self.name)


class PromoterStep(ThreadStep):
    """Celery worker bootstep that runs a :class:`Promoter` thread for the worker's lifetime."""

    label = "httpqueue-promoter"

    def loop(self, worker: t.Any) -> t.Callable[[threading.Event], None]:
        ctx = context.current()
        store = ctx.store
        last_beat = float("-inf")

        def heartbeat(name: str, interval: float) -> None:
            """Report in (see :mod:`httpqueue.health`) once the consumer is ready, a few times per lifetime."""
            nonlocal last_beat
            ttl = max(health.HEARTBEAT_MIN_TTL, interval * 20)
            if name not in _consuming or time.monotonic() - last_beat < ttl / HEARTBEATS_PER_TTL:
                return
            health.beat(store.redis, ctx.keys, name, int(ttl * 1000))
            last_beat = time.monotonic()

        self.node = nodes.Heartbeat(ctx.registry, nodes.worker_identity(worker.hostname),
                                    _attempts_in_flight()).start()
        reaper = nodes.Reaper(self.node.registry, store.release_orphans, self.node)
        if not rabbitmq.is_amqp(worker.app.conf.broker_url):  # RabbitMQ hands a dead consumer's messages on itself
            holds = Holds(store, nodes.worker_incarnation()).start()
            signals.task_received.connect(holds.received, weak=False)
            _stopping.append(holds)
        promoter = Promoter(store, Publisher(worker.app), interval=ctx.settings.promoter_interval,
                            name=worker.hostname, heartbeat=heartbeat, reap=reaper.reap)
        if ctx.settings.worker_metrics_port:
            from httpqueue import metrics

            metrics.serve(ctx.settings.worker_metrics_port, ctx)
        return promoter.run

    def stop(self, worker: t.Any) -> None:
        """Stop the promoter, then withdraw the heartbeat so readiness turns now, not when it runs out.

        The delivery messages this worker holds, not yet due, are handed out
        again at :func:`_release_holds` (Celery's ``worker_shutdown``, once
        the consumer has stopped taking messages), not here.
        """
        super().stop(worker)
        node: nodes.Heartbeat | None = getattr(self, "node", None)
        if node is not None:
            node.stop(leave=True)
        _consuming.discard(worker.hostname)
        ctx = context.current()
        try:
            health.forget(ctx.store.redis, ctx.keys, worker.hostname)
        except redis.RedisError:  # Redis away: the heartbeat runs out by itself
            pass

    shutdown = stop


_stopping: list[Holds] = []
"""The holds of this process's workers, released when the worker shuts down."""


@signals.worker_shutdown.connect(weak=False)
def _release_holds(sender: t.Any = None, **kwargs: t.Any) -> None:
    """A clean stop: the tasks of the messages this worker held, not yet due, go to other workers now.

    Celery sends ``worker_shutdown`` after its consumer and pool stopped; the
    held ETA messages stay unacknowledged in the broker (kombu's restore at
    shutdown is off, see :mod:`httpqueue.celery`), so without this their
    tasks would wait for their lease after every restart of a worker.
    """
    while _stopping:
        holds = _stopping.pop()
        signals.task_received.disconnect(holds.received)
        try:
            holds.release(int(time.time() * 1000))
        except OUTAGE_ERRORS as exc:  # Redis away: the tasks come back when their lease runs out
            events.emit("held_release_failed", logging.WARNING, error=str(exc)[:300])


def _attempts_in_flight(every: int = 5) -> t.Callable[[], float]:
    """The worker's load figure: attempts in flight in its pool processes, re-read every ``every`` beats.

    Summed from the pool processes' gauge (:func:`httpqueue.metrics.attempts_in_flight`),
    which reads the multiprocess files; not on each beat, to keep the heartbeat thread cheap.
    """
    from httpqueue import metrics

    last, beats = 0.0, 0

    def load() -> float:
        nonlocal last, beats
        if beats % every == 0:
            last = metrics.attempts_in_flight()
        beats += 1
        return last
    return load
