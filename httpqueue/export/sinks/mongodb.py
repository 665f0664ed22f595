"""MongoDB sink: pymongo ``insert_many(ordered=False)`` with ``_id`` = event id, a TTL index.

URL: ``mongodb://[user:password@]host[:27017]/[database]?collection=events&ttl_days=30&timeseries=0``
(any other query parameter is pymongo's).

A re-sent batch meets its own ``_id`` s: those duplicate-key errors (code
11000) mean "already stored" and count as success; the other documents of the
batch are inserted all the same (unordered). ``prepare`` creates a TTL index on
``ts`` (``ttl_days``, 0 for none). With ``timeseries=1`` the collection is
created as a time-series collection (MongoDB 5.0+; ``ts`` and ``meta``, with
``expireAfterSeconds``): such collections have no unique ``_id`` index, so
there a re-sent batch is stored twice; use the default collection where
exactly-once matters.
"""
from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

from pymongo import ASCENDING, MongoClient
from pymongo.errors import BulkWriteError, CollectionInvalid, PyMongoError

from httpqueue.export.events import Event
from httpqueue.export.sinks import SinkKind, SinkUnavailable, WriteResult, location, split_options

DEFAULT_DATABASE = "httpqueue"
DEFAULT_COLLECTION = "events"
DEFAULT_TTL_DAYS = 30

DUPLICATE_KEY = 11000
"""The write error of a document whose ``_id`` is stored already: here, success."""

RETRY_CODES = frozenset({6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})
"""Per-document error codes that mean "not now" (network, shutdown, not primary): tried again later."""


class MongoSink:
    """Inserts events into one MongoDB collection."""

    kind = SinkKind.MONGODB

    def __init__(self, url: str, timeout_ms: int = 10_000) -> None:
        clean, options = split_options(url, ("collection", "ttl_days", "timeseries"))
        self.ttl_days = int(options.get("ttl_days", DEFAULT_TTL_DAYS))
        self.timeseries = options.get("timeseries", "0").lower() in ("1", "true", "yes")
        self.client: MongoClient[dict[str, t.Any]] = MongoClient(
            clean, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, socketTimeoutMS=3 * timeout_ms)
        self.database = self.client.get_default_database(default=DEFAULT_DATABASE)
        self.collection = self.database[options.get("collection", DEFAULT_COLLECTION)]
        path = urlsplit(clean).path.strip("/") or DEFAULT_DATABASE
        self.label = f"mongodb:{location(clean.split('?')[0]).split('/')[0]}/{path}.{self.collection.name}"
        self._prepared = False

    def prepare(self) -> None:
        """Create the TTL index (or the time-series collection) if missing."""
        ttl = int(self.ttl_days * 86_400)
        try:
            if self.timeseries:
                try:
                    extra: dict[str, t.Any] = {"expireAfterSeconds": ttl} if ttl else {}
                    self.database.create_collection(
                        self.collection.name, timeseries={"timeField": "ts", "metaField": "meta",
                                                          "granularity": "seconds"}, **extra)
                except CollectionInvalid:
                    pass  # exists
            elif ttl:
                self.collection.create_index([("ts", ASCENDING)], expireAfterSeconds=ttl, name="ts_ttl")
        except PyMongoError as exc:
            raise SinkUnavailable(f"MongoDB {self.label}: {exc}") from exc
        self._prepared = True

    def write(self, events: t.Sequence[Event]) -> WriteResult:
        """One unordered ``insert_many``; duplicate ids are success."""
        if not self._prepared:
            self.prepare()
        docs = [document(e, self.timeseries) for e in events]
        result = WriteResult()
        try:
            self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                event_id = str(docs[int(error["index"])]["_id"])
                if error.get("code") == DUPLICATE_KEY:
                    continue
                if error.get("code") in RETRY_CODES:
                    result.retry.add(event_id)
                else:
                    result.rejected[event_id] = str(error.get("errmsg", error.get("code")))
        except PyMongoError as exc:
            raise SinkUnavailable(f"MongoDB {self.label}: {exc}") from exc
        return result

    def close(self) -> None:
        self.client.close()


def document(event: Event, timeseries: bool = False) -> dict[str, t.Any]:
    """The event as a document; fields the kind does not have are left out."""
    doc: dict[str, t.Any] = {"_id": event.event_id, "ts": event.time, "kind": event.kind.value,
                             "task_id": event.task_id, "topic": event.topic, "shard": event.shard}
    optional = {"attempt": event.attempt, "code": event.code, "duration_ms": event.duration_ms,
                "lateness_ms": event.lateness_ms, "error": event.error, "next_ms": event.next_ms,
                "callback_host": event.callback_host}
    doc.update({k: v for k, v in optional.items() if v is not None})
    if timeseries:
        doc["meta"] = {"topic": event.topic, "kind": event.kind.value}
    return doc
