"""Elasticsearch sink: the official client's bulk helper, one daily index per day, ``_id`` = event id.

URL: ``elasticsearch://[user:password@]host[:9200]?index=httpqueue-events&ilm_policy=NAME``
(``elasticsearchs://`` for HTTPS).

:meth:`ElasticsearchSink.prepare` puts an index template for ``<index>-*``
with ECS field names where they fit (``@timestamp``, ``event.*``,
``url.domain``, ``error.message``) and httpqueue's own under ``httpqueue.*``;
with ``ilm_policy`` the template names that lifecycle policy (e.g. one that
deletes indices after 30 days; create it in Kibana or with
``PUT _ilm/policy/NAME``). Documents go to ``<index>-YYYY.MM.DD`` by event
time, with the ``index`` action: a re-sent event overwrites itself.
"""
from __future__ import annotations

import typing as t
from urllib.parse import unquote, urlsplit, urlunsplit

import elastic_transport
from elasticsearch import ApiError, Elasticsearch, helpers

from httpqueue.export.events import Event, EventKind
from httpqueue.export.sinks import SinkKind, SinkUnavailable, WriteResult, location, split_options

DEFAULT_INDEX = "httpqueue-events"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Per-item statuses tried again later (the helper already retried 429s a few times); others are refused for good."""

OUTCOMES = {EventKind.SUCCEEDED: "success", EventKind.RETRYING: "failure", EventKind.FAILED: "failure",
            EventKind.THROTTLED: "unknown"}
"""ECS ``event.outcome`` of the attempt kinds."""

MAPPINGS: dict[str, t.Any] = {
    "dynamic": False,
    "properties": {
        "@timestamp": {"type": "date"},
        "event": {"properties": {
            "id": {"type": "keyword"}, "kind": {"type": "keyword"}, "action": {"type": "keyword"},
            "outcome": {"type": "keyword"}, "duration": {"type": "long"}, "dataset": {"type": "keyword"}}},
        "url": {"properties": {"domain": {"type": "keyword"}}},
        "error": {"properties": {"message": {"type": "text"}}},
        "httpqueue": {"properties": {
            "task_id": {"type": "keyword"}, "topic": {"type": "keyword"}, "shard": {"type": "integer"},
            "attempt": {"type": "integer"}, "code": {"type": "integer"}, "lateness_ms": {"type": "long"},
            "next_ms": {"type": "date", "format": "epoch_millis"}}},
    },
}


class ElasticsearchSink:
    """Indexes events into daily indices through ``helpers.bulk``."""

    kind = SinkKind.ELASTICSEARCH

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        clean, options = split_options(url, ("index", "ilm_policy"))
        parts = urlsplit(clean)
        scheme = "https" if parts.scheme.endswith("s") and parts.scheme != "elasticsearch" else "http"
        netloc = f"{parts.hostname}:{parts.port or 9200}"
        self.index = options.get("index", DEFAULT_INDEX)
        self.ilm_policy = options.get("ilm_policy", "")
        self.label = f"elasticsearch:{location(clean.split('?')[0])}/{self.index}"
        auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        self.client = Elasticsearch(urlunsplit((scheme, netloc, parts.path, "", "")), basic_auth=auth,
                                    request_timeout=timeout, max_retries=2, retry_on_timeout=True)
        self._prepared = False

    def prepare(self) -> None:
        """Put the index template (idempotent: the same body each time)."""
        settings: dict[str, t.Any] = {"number_of_shards": 1}
        if self.ilm_policy:
            settings["index.lifecycle.name"] = self.ilm_policy
        try:
            self.client.indices.put_index_template(
                name=self.index, index_patterns=[f"{self.index}-*"],
                template={"settings": settings, "mappings": MAPPINGS})
        except (ApiError, elastic_transport.TransportError) as exc:
            raise SinkUnavailable(f"Elasticsearch {self.label}: {exc}") from exc
        self._prepared = True

    def write(self, events: t.Sequence[Event]) -> WriteResult:
        """One ``_bulk`` request (the helper retries per-item 429s a few times itself)."""
        if not self._prepared:
            self.prepare()
        actions = [{"_op_type": "index", "_index": self.index_of(e), "_id": e.event_id, "_source": document(e)}
                   for e in events]
        try:
            _, errors = helpers.bulk(self.client, actions, chunk_size=max(1, len(actions)),
                                     max_chunk_bytes=50 * 1024 * 1024, raise_on_error=False, max_retries=2,
                                     initial_backoff=0.2, max_backoff=2.0)
        except (ApiError, elastic_transport.TransportError) as exc:
            raise SinkUnavailable(f"Elasticsearch {self.label}: {exc}") from exc
        result = WriteResult()
        for item in t.cast(list[dict[str, t.Any]], errors):
            detail = next(iter(item.values()))
            if int(detail.get("status", 500)) in RETRY_STATUSES:
                result.retry.add(str(detail.get("_id")))
            else:
                result.rejected[str(detail.get("_id"))] = str(detail.get("error"))
        return result

    def index_of(self, event: Event) -> str:
        """The daily index of an event (by its own time, so a re-send lands where the first copy is)."""
        return f"{self.index}-{event.time:%Y.%m.%d}"

    def close(self) -> None:
        self.client.close()


def document(event: Event) -> dict[str, t.Any]:
    """The event with ECS names where they fit."""
    ecs: dict[str, t.Any] = {"id": event.event_id, "kind": "event", "action": event.kind.value,
                             "dataset": "httpqueue.task"}
    if event.attempted:
        ecs["outcome"] = OUTCOMES.get(event.kind, "unknown")
        ecs["duration"] = int((event.duration_ms or 0) * 1_000_000)
    own = {"task_id": event.task_id, "topic": event.topic, "shard": event.shard, "attempt": event.attempt,
           "code": event.code, "lateness_ms": event.lateness_ms, "next_ms": event.next_ms}
    doc: dict[str, t.Any] = {"@timestamp": event.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                             "event": ecs, "httpqueue": {k: v for k, v in own.items() if v is not None}}
    if event.callback_host:
        doc["url"] = {"domain": event.callback_host}
    if event.error:
        doc["error"] = {"message": event.error}
    return doc
