"""The topic API (``/v1/topics``): settings, pause and resume, purge, dead letters.

The state changes themselves live in :mod:`httpqueue.topics`; this module only
validates requests and shapes answers.
"""
from __future__ import annotations

import typing as t

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from httpqueue import events
from httpqueue.api.base import ApiBlueprint, ctx, service
from httpqueue.api.documents import CURSOR_PATTERN, NEXT_CURSOR, counts_by_topic, empty_counts, task_document
from httpqueue.api.schemas import ApiErrorSchema, Pattern, TaskSchema
from httpqueue.clock import now_ms
from httpqueue.context import Context
from httpqueue.exceptions import InvalidInput
from httpqueue.states import State

MAX_RATE = 100_000.0
MAX_CONCURRENCY = 100_000
MAX_BREAKER_THRESHOLD = 100_000
MAX_BREAKER_COOLDOWN = 86_400.0


class TopicSettingsSchema(Schema):
    """Settings to change; a field set to null clears that setting, an absent field keeps it."""

    class Meta:
        unknown = RAISE

    rate_limit = fields.Float(allow_none=True, validate=validate.Range(min=0.001, max=MAX_RATE),
                              metadata={"description": "Most attempts started per second, across all workers.",
                                        "example": 50})
    concurrency = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, MAX_CONCURRENCY),
                                 metadata={"description": "Most attempts in flight at once, across all workers.",
                                           "example": 10})
    failure_callback = fields.Url(allow_none=True, schemes={"http", "https"}, require_tld=False,
                                  validate=validate.Length(max=2048),
                                  metadata={"description": "URL that receives one POST when a task of this topic "
                                                           "fails for good.", "example": "http://127.0.0.1:8888/failed"})

    breaker_threshold = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(0, MAX_BREAKER_THRESHOLD),
        metadata={"description": "This topic's failed attempts in a row to one callback host that open its "
                                 "circuit (0: no circuit breaker); null: the deployment's HTTPQUEUE_BREAKER_THRESHOLD.",
                  "example": 3})
    breaker_cooldown = fields.Float(
        allow_none=True, validate=validate.Range(min=0.1, max=MAX_BREAKER_COOLDOWN),
        metadata={"description": "Seconds this topic's opened circuits stay open before a probe (doubled on each "
                                 "reopening); null: the deployment's HTTPQUEUE_BREAKER_COOLDOWN.", "example": 10})

    @validates("rate_limit")
    def _finite(self, value: float | None, **_: t.Any) -> None:
        if value is not None and value != value:
            raise ValidationError("must be a number")

    @validates("breaker_cooldown")
    def _finite_cooldown(self, value: float | None, **_: t.Any) -> None:
        self._finite(value)


class CircuitSchema(Schema):
    host = fields.String()
    failures = fields.Integer(metadata={"description": "Failed attempts in a row."})
    open_until_ms = fields.Integer(allow_none=True)
    openings = fields.Integer()
    state = fields.String(metadata={"description": "closed, open or half-open"})


class TopicSchema(Schema):
    topic = fields.String()
    paused = fields.Boolean()
    rate_limit = fields.Float(allow_none=True)
    concurrency = fields.Integer(allow_none=True)
    failure_callback = fields.String(allow_none=True)
    breaker_threshold = fields.Integer(allow_none=True, metadata={"description": "null: the deployment's."})
    breaker_cooldown = fields.Float(allow_none=True, metadata={"description": "Seconds; null: the deployment's."})
    running = fields.Integer(metadata={"description": "Attempts in flight (counted when a concurrency limit is set)."})
    circuits = fields.List(fields.Nested(CircuitSchema))
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(),
                         metadata={"description": "Tasks per state."})


class TopicListSchema(Schema):
    topics = fields.List(fields.Nested(TopicSchema))


class PageArgs(Schema):
    class Meta:
        unknown = RAISE

    cursor = fields.String(validate=Pattern(CURSOR_PATTERN, error="not a cursor from a previous page"))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))


class IdsSchema(Schema):
    """Which dead letters: the listed ids, or all of the topic when `ids` is absent."""

    class Meta:
        unknown = RAISE

    ids = fields.List(fields.String(validate=validate.Length(1, 200)), validate=validate.Length(1, 1000))


class DeadPageSchema(Schema):
    tasks = fields.List(fields.Nested(TaskSchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": NEXT_CURSOR})


class CountSchema(Schema):
    topic = fields.String()
    count = fields.Integer()


blp = ApiBlueprint("topics", __name__, url_prefix="/v1/topics", description="Topics as queues")


@blp.route("", methods=["GET"])
@blp.response(200, TopicListSchema)
def list_topics() -> dict[str, t.Any]:
    """Every topic that has tasks or settings, with its counts, settings and circuits."""
    c = ctx()
    counts = counts_by_topic(c.store.counts())
    names = sorted(set(counts) | set(c.topics.configured()))
    return {"topics": [_topic(c, name, counts) for name in names]}


@blp.route("/<topic>", methods=["GET"])
@blp.response(200, TopicSchema)
def get(topic: str) -> dict[str, t.Any]:
    """One topic's settings, counts and circuits (a topic nobody configured has none)."""
    return _topic_now(topic)


@blp.route("/<topic>", methods=["PATCH"])
@blp.arguments(TopicSettingsSchema, location="json", error_status_code=400)
@blp.response(200, TopicSchema)
@blp.alt_response(400, schema=ApiErrorSchema, description="A setting is invalid.")
def configure(changes: dict[str, t.Any], topic: str) -> dict[str, t.Any]:
    """Set or clear the topic's rate limit, concurrency limit, failure callback and circuit-breaker settings."""
    _check_topic(topic)
    if changes.get("failure_callback"):
        service().check_url(changes["failure_callback"], "failure_callback")
    ctx().topics.configure(topic, changes)
    events.emit("topic_configured", topic=topic, **{k: v for k, v in changes.items() if k != "failure_callback"})
    return _topic_now(topic)


@blp.route("/<topic>/pause", methods=["POST"])
@blp.response(200, TopicSchema)
def pause(topic: str) -> dict[str, t.Any]:
    """Stop starting attempts; the topic's tasks keep their place and fire (late) after resume."""
    _check_topic(topic)
    ctx().topics.pause(topic)
    events.emit("topic_paused", topic=topic)
    return _topic_now(topic)


@blp.route("/<topic>/resume", methods=["POST"])
@blp.response(200, TopicSchema)
def resume(topic: str) -> dict[str, t.Any]:
    """Start attempts again; tasks that came due while paused fire now, in due order."""
    moved = ctx().topics.resume(topic)
    events.emit("topic_resumed", topic=topic, released=moved)
    return _topic_now(topic)


@blp.route("/<topic>/purge", methods=["POST"])
@blp.response(200, CountSchema)
def purge(topic: str) -> dict[str, t.Any]:
    """Delete every pending task of the topic (scheduled, queued, retrying, held)."""
    count = ctx().topics.purge(topic, now_ms())
    events.emit("topic_purged", topic=topic, count=count)
    return {"topic": topic, "count": count}


@blp.route("/<topic>/dead-letters", methods=["GET"])
@blp.arguments(PageArgs, location="query", error_status_code=400)
@blp.response(200, DeadPageSchema)
def dead_letters(args: dict[str, t.Any], topic: str) -> dict[str, t.Any]:
    """Tasks of the topic that failed for good, newest first, a page at a time."""
    page = ctx().store.list_tasks(State.FAILED, topic, args.get("cursor"), args["limit"])
    return {"tasks": [task_document(r) for r in page.tasks], "next_cursor": page.cursor}


@blp.route("/<topic>/dead-letters/replay", methods=["POST"])
@blp.arguments(IdsSchema, location="json", error_status_code=400)
@blp.response(200, CountSchema)
@blp.alt_response(409, schema=ApiErrorSchema, description="An id is not a dead letter of this topic.")
def replay(body: dict[str, t.Any], topic: str) -> dict[str, t.Any]:
    """Attempt dead letters again now: the listed `ids`, or all of the topic's without `ids`."""
    count = ctx().topics.replay_dead(topic, now_ms(), body.get("ids"))
    events.emit("dead_letters_replayed", topic=topic, count=count)
    return {"topic": topic, "count": count}


@blp.route("/<topic>/dead-letters/delete", methods=["POST"])
@blp.arguments(IdsSchema, location="json", error_status_code=400)
@blp.response(200, CountSchema)
@blp.alt_response(409, schema=ApiErrorSchema, description="An id is not a dead letter of this topic.")
def dismiss(body: dict[str, t.Any], topic: str) -> dict[str, t.Any]:
    """Remove dead letters (the listed `ids`, or all): they stay queryable as deleted until the retention ends."""
    count = ctx().topics.dismiss_dead(topic, now_ms(), body.get("ids"))
    events.emit("dead_letters_deleted", topic=topic, count=count)
    return {"topic": topic, "count": count}


def _check_topic(topic: str) -> None:
    limit = ctx().settings.max_topic
    if not topic or len(topic) > limit or any(ord(c) < 32 or ord(c) == 127 for c in topic):
        raise InvalidInput({"topic": [f"must be 1 to {limit} printable characters"]})


def _topic_now(name: str) -> dict[str, t.Any]:
    c = ctx()
    return _topic(c, name, counts_by_topic(c.store.counts()))


def _topic(c: Context, name: str, counts: t.Mapping[str, dict[str, int]]) -> dict[str, t.Any]:
    return {**c.topics.get(name, now_ms()), "counts": counts.get(name, empty_counts())}
