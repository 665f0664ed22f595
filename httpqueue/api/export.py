"""The event export's progress (``GET /v1/export``): per sink, what is still to read, what is pending, what was lost.

The figures come from the consumer groups in Redis (:mod:`httpqueue.export.status`),
so the API reports every sink of every ``httpqueue export`` process without
talking to them; this module only shapes the answer.
"""
from __future__ import annotations

import time
import typing as t

from marshmallow import Schema, fields

from httpqueue.api.base import ApiBlueprint, ctx
from httpqueue.api.schemas import ApiErrorSchema
from httpqueue.exceptions import StoreUnavailable
from httpqueue.export import status as export_status
from httpqueue.store.scripts import REDIS_ERRORS


class ExportConsumerSchema(Schema):
    name = fields.String(metadata={"description": "The exporter process (host and pid).", "example": "box-4121"})
    pending = fields.Integer(metadata={"description": "Events it was handed and has not acknowledged."})
    idle_seconds = fields.Float(metadata={"description": "Seconds since it last read or acknowledged (the "
                                                         "smallest over the shards)."})


class ExportSinkSchema(Schema):
    sink = fields.String(metadata={"description": "The sink's label, as `httpqueue export` names it in its logs "
                                                  "and metrics.", "example": "clickhouse:127.0.0.1:9000/default/"
                                                                             "httpqueue_events"})
    group = fields.String(metadata={"description": "The Redis consumer group (`export:` and the label)."})
    lag = fields.Integer(metadata={"description": "Events in the streams the sink's exporters have not read yet."})
    pending = fields.Integer(metadata={"description": "Events read and not acknowledged: being written, or held "
                                                      "by an exporter that died (claimed by another after "
                                                      "`export_claim_idle`)."})
    dropped = fields.Integer(metadata={"description": "Events trimmed from the streams (the bound) before the "
                                                      "sink got them, in total: lost to this sink."})
    last_delivered_id = fields.String(allow_none=True, metadata={
        "description": "The newest stream entry handed to the sink's exporters.", "example": "1764130000000-0"})
    last_delivered_at = fields.Float(allow_none=True, metadata={
        "description": "When that entry was written, Unix seconds."})
    last_delivered_age = fields.Float(allow_none=True, metadata={
        "description": "Seconds since that entry was written: how far behind the sink's reads are."})
    last_success_at = fields.Float(allow_none=True, metadata={
        "description": "When an exporter last acknowledged events of this sink (the sink took them, or refused "
                       "them for good), Unix seconds; null before the first."})
    last_success_age = fields.Float(allow_none=True, metadata={
        "description": "Seconds since then: growing while `lag` or `pending` is not 0 means the sink is stuck."})
    consumers = fields.List(fields.Nested(ExportConsumerSchema))


class ExportStatusSchema(Schema):
    enabled = fields.Boolean(metadata={"description": "Whether the store writes events now (`export_max_events` "
                                                      "above 0, or `httpqueue export --off`)."})
    max_events = fields.Integer(metadata={"description": "The bound of each shard's stream (0 while off): beyond "
                                                         "it the oldest events are trimmed, read or not."})
    shards = fields.Integer(metadata={"description": "Streams (one per shard) the figures are summed over."})
    sinks = fields.List(fields.Nested(ExportSinkSchema), metadata={
        "description": "One entry per sink any exporter ever served (its consumer group), by label."})


blp = ApiBlueprint("export", __name__, url_prefix="/v1/export", description="Event export progress per sink")


@blp.route("", methods=["GET"])
@blp.response(200, ExportStatusSchema)
@blp.alt_response(503, schema=ApiErrorSchema, description="Redis is unreachable.")
def export_progress() -> dict[str, t.Any]:
    """Per sink: events not yet read, read and not acknowledged, and lost to the bound; the exporters reading."""
    try:
        found = export_status.read(ctx().store.redis, ctx().keys)
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"the task store (Redis) is unavailable: {exc}") from exc
    return document(found, time.time())


def document(found: export_status.ExportStatus, now: float) -> dict[str, t.Any]:
    """The answer of ``GET /v1/export`` for ``found`` at ``now`` (Unix seconds)."""
    return {"enabled": found.enabled, "max_events": found.max_events, "shards": found.shards,
            "sinks": [_sink(s, now) for s in found.sinks]}


def _sink(sink: export_status.SinkStatus, now: float) -> dict[str, t.Any]:
    at = sink.last_delivered_ms / 1000 if sink.last_delivered_ms is not None else None
    success = sink.last_acked_ms / 1000 if sink.last_acked_ms is not None else None
    return {"sink": sink.sink, "group": sink.group, "lag": sink.counts.lag, "pending": sink.counts.pending,
            "dropped": sink.counts.dropped, "last_delivered_id": sink.last_delivered_id,
            "last_delivered_at": at, "last_delivered_age": _age(at, now),
            "last_success_at": success, "last_success_age": _age(success, now),
            "consumers": [{"name": c.name, "pending": c.pending, "idle_seconds": c.idle_ms / 1000}
                          for c in sink.consumers]}


def _age(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)
