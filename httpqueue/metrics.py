"""Prometheus metrics: counters fed by lifecycle events, gauges read from Redis at scrape time.

Counters and histograms listen to :mod:`httpqueue.events` (one place where
facts are emitted; nothing here polls or duplicates them). They are
multiprocess-safe: ``httpqueue api``, ``worker`` and ``run`` point
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before anything imports
prometheus_client, so gunicorn workers and Celery pool processes write to
files that one scrape sums up. ``httpqueue run`` shares the directory between
its API and its worker, so ``GET /metrics`` shows both; a worker on its own
serves its metrics on ``HTTPQUEUE_WORKER_METRICS_PORT``.

The task counts by state and topic, the overdue tasks, the promoter lag and
the live workers are read from Redis when scraped (:class:`StoreCollector`),
so they are exact whichever process answers. The lag is measured from the
tasks themselves (the oldest one past its due time and not yet attempted), not
from what a promoter reports, so it grows when no worker runs at all. Topic
labels are capped at :data:`MAX_TOPICS` distinct values per process (then
``other``), so a client inventing topics cannot blow up the series count.
"""
from __future__ import annotations

import glob
import os
import threading
import time
import typing as t

from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess,
)
import redis
from prometheus_client.core import GaugeMetricFamily

from httpqueue import events, health, nodes
from httpqueue.export import status as export_status
from httpqueue.export.exporter import progress_families
from httpqueue.metrics_dir import ENV
from httpqueue.store.scripts import REDIS_ERRORS
from httpqueue.states import Outcome

MAX_TOPICS = 200
OTHER = "other"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300)

CREATED = Counter("httpqueue_tasks_created_total", "Tasks created.", ["topic"])
DELIVERED = Counter("httpqueue_tasks_delivered_total", "Tasks whose callback succeeded.", ["topic"])
RETRIED = Counter("httpqueue_tasks_retried_total", "Failed attempts that will be retried.", ["topic"])
THROTTLED = Counter("httpqueue_tasks_throttled_total", "Attempts answered with code 101 (wait, no failure).",
                    ["topic"])
FAILED = Counter("httpqueue_tasks_failed_total", "Tasks that failed for good.", ["topic"])
DELETED = Counter("httpqueue_tasks_deleted_total", "Tasks deleted before they fired.", ["topic"])
DEFERRED = Counter("httpqueue_tasks_deferred_total", "Tasks turned away by their topic (limits, pause, circuit).",
                   ["topic"])
RESPONSES = Counter("httpqueue_receiver_responses_total", "Callback answers by code ('none': no usable answer).",
                    ["topic", "code"])
CALLBACK_SECONDS = Histogram("httpqueue_callback_duration_seconds", "Time a callback took.", ["topic"],
                             buckets=LATENCY_BUCKETS)
LATENESS_SECONDS = Histogram("httpqueue_firing_lateness_seconds", "Attempt start minus due time.", ["topic"],
                             buckets=LATENESS_BUCKETS)
PROMOTED = Counter("httpqueue_promoted_total", "Tasks handed from the timer to Celery.")
RECLAIMED = Counter("httpqueue_reclaimed_total", "Tasks re-issued after their lease ran out (a worker died).")
IN_FLIGHT = Gauge("httpqueue_attempts_in_flight", "Attempts handed to a worker's delivery loop, not recorded yet.",
                  multiprocess_mode="livesum")
RELEASED = Counter("httpqueue_attempts_released_total",
                   "Attempts of dead workers released for re-issue when their heartbeat stopped.")
CIRCUITS = Counter("httpqueue_circuit_opened_total", "Circuit breakers opened.", ["topic"])

OUTCOME_COUNTERS = {Outcome.SUCCEEDED: DELIVERED, Outcome.RETRYING: RETRIED, Outcome.THROTTLED: THROTTLED,
                    Outcome.FAILED: FAILED}

_topics: set[str] = set()
_topics_lock = threading.Lock()
_children: dict[tuple[int, str], t.Any] = {}
"""Labelled children of the per-topic metrics, by (metric, label): ``labels()`` costs more than a dict lookup."""


def topic_label(topic: t.Any) -> str:
    """The topic as a label value, or ``other`` once this process has seen :data:`MAX_TOPICS` topics."""
    name = str(topic or "")
    if name in _topics:  # a seen topic (the set only grows): no lock
        return name
    with _topics_lock:
        if name in _topics:
            return name
        if len(_topics) < MAX_TOPICS:
            _topics.add(name)
            return name
    return OTHER


def for_topic(metric: t.Any, topic: t.Any) -> t.Any:
    """``metric.labels(topic_label(topic))``, kept (at most :data:`MAX_TOPICS` + 1 children per metric)."""
    label = topic_label(topic)
    key = (id(metric), label)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(label)
    return child


def _attempt(fields: t.Mapping[str, t.Any]) -> None:
    topic = topic_label(fields.get("topic"))
    counter = OUTCOME_COUNTERS.get(fields.get("outcome", ""))
    if counter is not None:
        for_topic(counter, topic).inc()
    RESPONSES.labels(topic, str(fields.get("code") if fields.get("code") is not None else "none")).inc()
    for_topic(CALLBACK_SECONDS, topic).observe(max(0.0, float(fields.get("duration_ms") or 0) / 1000))
    for_topic(LATENESS_SECONDS, topic).observe(max(0.0, float(fields.get("late_ms") or 0) / 1000))


def _created_batch(fields: t.Mapping[str, t.Any]) -> None:
    """A batch create: one increment per topic, by the number of tasks created in it."""
    for topic, count in (fields.get("topics") or {}).items():
        for_topic(CREATED, topic).inc(count)


_HANDLERS: dict[str, t.Callable[[t.Mapping[str, t.Any]], None]] = {
    "create": lambda f: for_topic(CREATED, f.get("topic")).inc(),
    "create_batch": _created_batch,
    "attempt": _attempt,
    "delete": lambda f: for_topic(DELETED, f.get("topic")).inc(),
    "deferred": lambda f: for_topic(DEFERRED, f.get("topic")).inc(int(f.get("count") or 1)),
    "promoted": lambda f: PROMOTED.inc(int(f.get("count") or 0)),
    "reclaimed": lambda f: RECLAIMED.inc(int(f.get("count") or 0)),
    "worker_departed": lambda f: RELEASED.inc(int(f.get("released") or 0)),
    "circuit_open": lambda f: for_topic(CIRCUITS, f.get("topic")).inc(),
}


def on_event(name: str, fields: t.Mapping[str, t.Any]) -> None:
    """Update the metrics for one lifecycle event (an :mod:`httpqueue.events` listener)."""
    handler = _HANDLERS.get(name)
    if handler is not None:
        handler(fields)


events.subscribe(on_event)


def _hold_the_multiprocess_lock_across_fork() -> None:
    """Never fork while another thread holds prometheus_client's multiprocess lock.

    In multiprocess mode every metric update takes one lock global to the
    process, "as we presume this means there is no threading going on". A
    worker has threads (the promoter counts what it promotes), and Celery's
    prefork pool forks children at start and whenever one is replaced: a
    child forked while the promoter held the lock would inherit it held and
    hang at its first metric. So the forking thread takes the lock first and
    both sides release it after the fork (the standard ``register_at_fork``
    guard; prometheus_client keeps the lock in a closure, found here).
    """
    from prometheus_client import values

    closure = getattr(getattr(values.ValueClass, "inc", None), "__closure__", None) or ()
    locks = [cell.cell_contents for cell in closure if isinstance(cell.cell_contents, type(threading.Lock()))]
    if len(locks) == 1:  # multiprocess mode (a single-process value has a lock per value, not shared)
        lock = locks[0]
        os.register_at_fork(before=lock.acquire, after_in_parent=lock.release, after_in_child=lock.release)


_hold_the_multiprocess_lock_across_fork()


def _renew_label_locks_in_child() -> None:
    """In a forked child, fresh locks for the topic labels and for each labelled metric's children.

    ``topic_label`` takes :data:`_topics_lock` for a topic it has not seen, and
    prometheus_client's ``labels()`` takes the metric's own lock to make a
    child. A worker's scheduler thread creates tasks (so labels them) while
    Celery may fork a pool child: a child forked while that thread held one
    would wait for ever at its first new topic. Only the forking thread exists
    in the child, so nothing there holds them.
    """
    global _topics_lock
    _topics_lock = threading.Lock()
    for metric in list(globals().values()):
        if getattr(metric, "_labelnames", None) and hasattr(metric, "_lock"):
            metric._lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_label_locks_in_child)


class StoreCollector:
    """Gauges read from Redis at scrape time: tasks by state and topic, promoter lag, live workers."""

    def __init__(self, ctx: t.Any) -> None:
        self.ctx = ctx

    def collect(self) -> t.Iterator[GaugeMetricFamily]:
        store = self.ctx.store
        tasks = GaugeMetricFamily("httpqueue_tasks", "Tasks by state and topic (from Redis).",
                                  labels=["state", "topic"])
        for (state, topic), n in sorted(store.counts().items()):
            tasks.add_metric([state, topic], n)
        yield tasks
        now = int(time.time() * 1000)
        late = health.overdue(store.redis, store.keys, now)
        yield GaugeMetricFamily(
            "httpqueue_promoter_lag_seconds",
            "How far the oldest overdue task (due time passed, attempt not started) is past its due time; "
            "grows while no worker runs.", value=late.lag_seconds(now))
        yield GaugeMetricFamily("httpqueue_tasks_overdue",
                                "Tasks whose due time passed and whose attempt has not started.", value=late.count)
        yield GaugeMetricFamily("httpqueue_workers", "Workers whose promoter reported in recently.",
                                value=health.live_workers(store.redis, self.ctx.keys))
        live = GaugeMetricFamily("httpqueue_nodes", "Live nodes of the registry by role (API processes, workers).",
                                 labels=["role"])
        for role, n in self.ctx.registry.counts().items():
            live.add_metric([str(role)], n)
        yield live


SCRAPE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, *REDIS_ERRORS)
"""Errors a scrape-time read may meet: Redis away or refusing (the gauges are left out, the scrape answers)."""


class ExportCollector:
    """Per sink: the export's lag, pending and dropped events, read from the consumer groups at scrape time.

    The names, label and meanings are those of ``httpqueue export``'s own
    ``/metrics`` (:class:`httpqueue.export.exporter.ExportCollector`), which
    only knows its own sinks and only while it runs; here every sink shows,
    exporter running or not. A bounded read (:data:`~httpqueue.export.status.MAX_GROUPS`
    groups, no per-consumer calls); a Redis error leaves these gauges out
    rather than failing the scrape.
    """

    def __init__(self, ctx: t.Any) -> None:
        self.ctx = ctx

    def collect(self) -> t.Iterator[GaugeMetricFamily]:
        try:
            found = export_status.read(self.ctx.store.redis, self.ctx.keys, consumers=False)
        except SCRAPE_ERRORS:
            return
        lag, pending, dropped = progress_families()
        for sink in found.sinks:
            lag.add_metric([sink.sink], sink.counts.lag)
            pending.add_metric([sink.sink], sink.counts.pending)
            dropped.add_metric([sink.sink], sink.counts.dropped)
        success = GaugeMetricFamily("httpqueue_export_last_success_seconds",
                                    "Unix time of a sink's last accepted batch", labels=["sink"])
        for sink in found.sinks:
            if sink.last_acked_ms:
                success.add_metric([sink.sink], sink.last_acked_ms / 1000)
        yield from (lag, pending, dropped, success)
        yield GaugeMetricFamily("httpqueue_export_max_events",
                                "Bound of each shard's event stream (0: export is off)", value=found.max_events)


def attempts_in_flight() -> float:
    """Attempts in flight in every process of this host sharing the multiprocess directory (or this one).

    Reads every process's metric files: for a heartbeat every few seconds, not for a hot path.
    """
    if not os.environ.get(ENV):
        return float(IN_FLIGHT._value.get())
    _forget_dead_processes(os.environ[ENV])
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for metric in registry.collect():
        if metric.name == IN_FLIGHT._name:
            return float(sum(sample.value for sample in metric.samples))
    return 0.0


def exposition(ctx: t.Any | None = None) -> tuple[bytes, str]:
    """The metrics of every process of this host (multiprocess) or this one, plus the store's gauges."""
    if os.environ.get(ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if ctx is not None:
        store_registry = CollectorRegistry()
        store_registry.register(StoreCollector(ctx))
        store_registry.register(ExportCollector(ctx))
        body += generate_latest(store_registry)
    return body, CONTENT_TYPE_LATEST


def _forget_dead_processes(folder: str) -> None:
    """Drop the live gauges of processes that are gone (a pool process killed -9 never said so).

    Its last value would otherwise count for ever: attempts it had in flight
    were released with it, and are counted again by whoever took them over.
    """
    for path in glob.glob(os.path.join(folder, "gauge_live*_*.db")):
        pid = path.rsplit("_", 1)[-1][:-3]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(int(pid), folder)
        except PermissionError:  # alive, another user's
            pass


def serve(port: int, ctx: t.Any | None = None) -> None:
    """Serve :func:`exposition` on ``port`` (a worker's metrics endpoint), in a daemon thread."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, content_type = exposition(ctx)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: t.Any) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="httpqueue-metrics", daemon=True).start()


def mark_process_dead(pid: int) -> None:
    """gunicorn ``child_exit`` hook: drop a dead worker's live gauges from the multiprocess files."""
    if os.environ.get(ENV):
        multiprocess.mark_process_dead(pid)
