"""The node registry's API (``/v1/nodes``): the API processes and workers alive now.

The registry itself (heartbeats, incarnations, what a dead worker's entry is
for) lives in :mod:`httpqueue.nodes`; this module only shapes the answer.
"""
from __future__ import annotations

import typing as t

from marshmallow import Schema, fields

from httpqueue import nodes
from httpqueue.api.base import ApiBlueprint, ctx
from httpqueue.api.schemas import ApiErrorSchema


class NodeSchema(Schema):
    incarnation = fields.String(metadata={"description": "Random per start: a node restarted under the same name "
                                                         "is a new incarnation.", "example": "9f2c61d0a4b3e857"})
    role = fields.String(metadata={"description": "`api` (one serving API process) or `worker` (one Celery "
                                                  "worker with its pool).", "enum": [str(r) for r in nodes.Role]})
    name = fields.String(metadata={"description": "The API's listen address or the worker's Celery name.",
                                   "example": "w1@host"})
    host = fields.String()
    pid = fields.Integer()
    version = fields.String()
    started = fields.Float(metadata={"description": "Start time, epoch seconds."})
    last_seen = fields.Float(metadata={"description": "Time of the last heartbeat, epoch seconds."})
    load_figure = fields.Float(data_key="load", attribute="load", metadata={
        "description": "Requests per second (API) or attempts in flight (worker)."})


class NodeListSchema(Schema):
    nodes = fields.List(fields.Nested(NodeSchema))
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(),
                         metadata={"description": "Live nodes per role."})
    heartbeat_ttl = fields.Float(metadata={"description": "Seconds without a heartbeat after which a node is gone "
                                                          "(and a worker's attempts are handed out again)."})


blp = ApiBlueprint("nodes", __name__, url_prefix="/v1/nodes", description="Live API processes and workers")


@blp.route("", methods=["GET"])
@blp.response(200, NodeListSchema)
@blp.alt_response(503, schema=ApiErrorSchema, description="Redis is unreachable.")
def list_nodes() -> dict[str, t.Any]:
    """Every node whose heartbeat is fresh: API processes first, then workers, by name."""
    live = ctx().registry.live()
    counts = dict.fromkeys((str(r) for r in nodes.Role), 0)
    for node in live:
        counts[str(node.identity.role)] += 1
    return {"nodes": [node.to_dict() for node in live], "counts": counts, "heartbeat_ttl": nodes.HEARTBEAT_TTL}
