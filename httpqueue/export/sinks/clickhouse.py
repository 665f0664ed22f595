"""ClickHouse sink: clickhouse-driver (native protocol), one INSERT per batch into a ReplacingMergeTree.

URL: ``clickhouse://[user:password@]host[:9000]/[database]?table=httpqueue_events&retention_days=30``.

The table is created if missing (see :data:`CREATE`): partitioned by day,
ordered by topic, time and event id. A re-sent batch inserts its rows again;
ReplacingMergeTree keeps one row per sorting key, so after a merge (or at
query time with ``FINAL``, or by counting ``uniqExact(event_id)``) every event
counts once. Insert deduplication would do it without ``FINAL``, but only
Replicated tables (ZooKeeper) have it. ClickHouse before 19.6 has no table TTL:
with ``retention_days`` the sink drops partitions older than that once an hour.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import typing as t
from urllib.parse import unquote, urlsplit

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from httpqueue.export.events import Event
from httpqueue.export.sinks import SinkKind, SinkUnavailable, WriteResult, location, split_options

DEFAULT_TABLE = "httpqueue_events"

CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    event_id String,
    time DateTime('UTC'),
    time_ms UInt64,
    kind String,
    task_id String,
    topic String,
    shard UInt16,
    attempt Nullable(UInt32),
    code Nullable(Int32),
    duration_ms Nullable(Float64),
    lateness_ms Nullable(Int64),
    error Nullable(String),
    next_ms Nullable(UInt64),
    callback_host Nullable(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(time)
ORDER BY (topic, time, event_id)
"""
"""The table (``{table}`` is ``database.table``). ``time`` is whole seconds (18.16 has no DateTime64): ``time_ms``
keeps the milliseconds."""

COLUMNS = ("event_id", "time", "time_ms", "kind", "task_id", "topic", "shard", "attempt", "code", "duration_ms",
           "lateness_ms", "error", "next_ms", "callback_host")

RETENTION_CHECK = 3600.0
"""Seconds between two sweeps of partitions older than ``retention_days``."""

UNAVAILABLE: tuple[type[BaseException], ...] = (ch_errors.Error, OSError, EOFError)
"""What the driver raises when the server is away, restarting or refusing: the batch is retried."""


class ClickHouseSink:
    """Inserts events into one ClickHouse table."""

    kind = SinkKind.CLICKHOUSE

    def __init__(self, url: str, connect_timeout: float = 5.0, timeout: float = 30.0) -> None:
        clean, options = split_options(url, ("table", "retention_days"))
        parts = urlsplit(clean)
        self.database = parts.path.strip("/") or "default"
        self.table = f"{self.database}.{options.get('table', DEFAULT_TABLE)}"
        self.retention_days = int(options.get("retention_days") or 0)
        self.label = f"clickhouse:{location(clean.split('?')[0])}/{options.get('table', DEFAULT_TABLE)}"
        self.client = Client(
            host=parts.hostname or "127.0.0.1", port=parts.port or 9000, database=self.database,
            user=unquote(parts.username or "default"), password=unquote(parts.password or ""),
            secure=parts.scheme == "clickhouses", connect_timeout=connect_timeout,
            send_receive_timeout=timeout, sync_request_timeout=timeout)
        self._prepared = False
        self._swept_at: float | None = None  # never swept yet
        # the driver logs every failed connect with a traceback; the exporter reports outages itself, once a try
        logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)

    def prepare(self) -> None:
        """Create the table if missing (the database must exist)."""
        self._run(CREATE.format(table=self.table))
        self._prepared = True

    def write(self, events: t.Sequence[Event]) -> WriteResult:
        """One INSERT of the batch; any error means none of it counts (a re-send is harmless)."""
        if not self._prepared:
            self.prepare()
        self._run(f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES", [row(e) for e in events])
        self._sweep()
        return WriteResult()

    def close(self) -> None:
        self.client.disconnect()

    def _sweep(self) -> None:
        """Drop the day partitions past ``retention_days`` (ClickHouse 18.16 has no TTL), at most once an hour."""
        if not self.retention_days or (self._swept_at is not None
                                       and time.monotonic() - self._swept_at < RETENTION_CHECK):
            return
        self._swept_at = time.monotonic()
        oldest = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=self.retention_days)).strftime("%Y%m%d")
        database, _, table = self.table.partition(".")
        parts = self._run("SELECT DISTINCT partition FROM system.parts WHERE database = %(db)s AND table = %(t)s "
                          "AND active AND partition < %(oldest)s", {"db": database, "t": table, "oldest": oldest})
        for (partition,) in parts or []:
            self._run(f"ALTER TABLE {self.table} DROP PARTITION {int(partition)}")

    def _run(self, query: str, params: t.Any = None) -> t.Any:
        try:
            return self.client.execute(query, params) if params is not None else self.client.execute(query)
        except UNAVAILABLE as exc:
            self.client.disconnect()  # a half-read reply must not be taken for the next query's
            raise SinkUnavailable(f"ClickHouse {self.label}: {exc}") from exc


def row(event: Event) -> tuple[t.Any, ...]:
    """The event as a row in :data:`COLUMNS` order."""
    return (event.event_id, event.time, event.time_ms, event.kind.value, event.task_id, event.topic, event.shard,
            event.attempt, event.code, event.duration_ms, event.lateness_ms, event.error, event.next_ms,
            event.callback_host)
