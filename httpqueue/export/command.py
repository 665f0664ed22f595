"""What ``httpqueue export`` does, apart from parsing its options (kept in :mod:`httpqueue.cli`)."""
from __future__ import annotations

import logging
import signal
import typing as t

from httpqueue.config import Settings
from httpqueue.connections import redis_client
from httpqueue.context import resolve_redis_url
from httpqueue.export import switch
from httpqueue.export.exporter import Exporter
from httpqueue.export.sinks import SinkError, from_url
from httpqueue.store.keys import Keys

LOGGER = logging.getLogger("httpqueue.export")


def run(settings: Settings, *, off: bool = False) -> int:
    """Export until SIGTERM or Ctrl-C (exit 0); 2 when no sink is configured or a sink URL is wrong.

    With ``off``: turn event writing off for the whole store and return.
    """
    client = redis_client(resolve_redis_url(settings), settings.sentinel_master)
    keys = Keys(settings.key_prefix, settings.shards)
    if off:
        switch.disable(client, keys)
        LOGGER.warning("event writing is off; what the streams hold stays until exported")
        return 0
    try:
        sinks = [from_url(url) for url in settings.export_sinks]
    except SinkError as exc:
        LOGGER.error("%s", exc)
        return 2
    if not sinks:
        LOGGER.error("no sink: pass --sink URL or set HTTPQUEUE_EXPORT_SINKS")
        return 2
    if settings.export_max_events:
        switch.enable(client, keys, settings.export_max_events)
    elif not any(switch.bounds(client, keys)):
        LOGGER.warning("event writing is off: set HTTPQUEUE_EXPORT_MAX_EVENTS (e.g. 100000) on the API and "
                       "workers, or here, or nothing will be exported")
    exporter = Exporter(client, keys, sinks, batch=settings.export_batch,
                        claim_idle_ms=int(settings.export_claim_idle * 1000)).start()
    if settings.export_metrics_port:
        exporter.serve_metrics(settings.export_metrics_port)

    def stop(signum: int, frame: t.Any) -> None:
        exporter.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    LOGGER.warning("exporting events to %s", ", ".join(s.label for s in sinks))
    exporter.wait()
    exporter.stop()
    return 0
