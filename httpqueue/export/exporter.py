"""The ``httpqueue export`` process: one thread per sink, and their metrics.

Several exporters may run: each sink is a consumer group, so every event goes
to one exporter per sink, and an exporter that dies leaves its pending events
to the others (after ``export_claim_idle`` seconds).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import typing as t

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from httpqueue.connections import StoreClient
from httpqueue.export.pump import Backoff, Pump
from httpqueue.export.sinks import Sink
from httpqueue.export.stream import GroupReader
from httpqueue.store.keys import Keys

LOGGER = logging.getLogger("httpqueue.export")

GROUP_PREFIX = "export:"
"""Consumer group names are this and the sink's label (``export:clickhouse:host:9000/default/httpqueue_events``)."""


def group_name(sink: Sink) -> str:
    """The consumer group of a sink: one per destination, so each destination gets every event once."""
    return GROUP_PREFIX + sink.label


def consumer_name() -> str:
    """This process's name in the consumer groups: host and pid (a restarted exporter is a new consumer)."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Exporter:
    """Runs a :class:`~httpqueue.export.pump.Pump` per sink in threads until :meth:`stop`."""

    def __init__(self, client: StoreClient, keys: Keys, sinks: t.Sequence[Sink], *, batch: int = 500,
                 claim_idle_ms: int = 60_000, consumer: str | None = None) -> None:
        name = consumer or consumer_name()
        self.pumps = [Pump(GroupReader(client, keys, group_name(s), name, claim_idle_ms), s, batch=batch)
                      for s in sinks]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Exporter:
        for pump in self.pumps:
            thread = threading.Thread(target=self._run, args=(pump,), name=f"export {pump.sink.label}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current batches (a batch cut short stays pending and is sent again) and close the sinks."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        for pump in self.pumps:
            pump.sink.close()

    def wait(self) -> None:
        """Block until :meth:`request_stop` or :meth:`stop` is called."""
        while not self._stop.wait(1.0):
            pass

    def request_stop(self) -> None:
        """Ask the threads to finish (safe in a signal handler); :meth:`stop` then joins them."""
        self._stop.set()

    def _run(self, pump: Pump) -> None:
        """One sink's loop: a Redis outage is waited out like a sink outage, with the same backoff."""
        redis_backoff = Backoff()
        while not self._stop.is_set():
            try:
                wait = pump.step()
                redis_backoff.reset()
            except Exception as exc:  # noqa: BLE001 - Redis away or a bug: log, wait, go on
                wait = redis_backoff.failed()
                pump.stats.failures += 1
                pump.stats.last_error = f"reading the event stream: {exc}"
                LOGGER.warning("export to %s: %s; next try in %.1f s", pump.sink.label, exc, wait, exc_info=True)
            if wait:
                self._stop.wait(wait)

    def serve_metrics(self, port: int, address: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` (Prometheus text) on ``address:port`` from a thread."""
        registry = CollectorRegistry()
        registry.register(ExportCollector(self.pumps))  # type: ignore[arg-type]
        start_http_server(port, addr=address, registry=registry)


def progress_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    """The lag, pending and dropped gauges per sink: one definition for the exporter's and the API's ``/metrics``."""
    return (GaugeMetricFamily("httpqueue_export_lag_events", "Events in the streams not yet read for a sink",
                              labels=["sink"]),
            GaugeMetricFamily("httpqueue_export_pending_events",
                              "Events read for a sink and not yet acknowledged", labels=["sink"]),
            GaugeMetricFamily("httpqueue_export_dropped_events",
                              "Events trimmed from the streams (MAXLEN) before a sink got them, in total",
                              labels=["sink"]))


class ExportCollector:
    """The exporter's metrics, per sink, read from the pumps at scrape time."""

    def __init__(self, pumps: t.Sequence[Pump]) -> None:
        self.pumps = pumps

    def collect(self) -> t.Iterator[CounterMetricFamily | GaugeMetricFamily]:
        exported = CounterMetricFamily("httpqueue_export_events", "Events a sink stored", labels=["sink"])
        rejected = CounterMetricFamily("httpqueue_export_rejected_events",
                                       "Events a sink refused for good (dropped, logged)", labels=["sink"])
        failures = CounterMetricFamily("httpqueue_export_failures", "Batches a sink did not take (retried)",
                                       labels=["sink"])
        lag, pending, dropped = progress_families()
        success = GaugeMetricFamily("httpqueue_export_last_success_seconds",
                                    "Unix time of a sink's last accepted batch", labels=["sink"])
        for pump in self.pumps:
            s, label = pump.stats, [pump.sink.label]
            exported.add_metric(label, s.exported)
            rejected.add_metric(label, s.rejected)
            failures.add_metric(label, s.failures)
            lag.add_metric(label, s.status.lag)
            pending.add_metric(label, s.status.pending)
            dropped.add_metric(label, s.status.dropped)
            success.add_metric(label, s.last_success)
        yield from (exported, rejected, failures, lag, pending, dropped, success)
