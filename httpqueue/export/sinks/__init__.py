"""Where exported events go: a sink per URL scheme, all written idempotently on the event id.

A sink's contract (:class:`Sink`): :meth:`Sink.prepare` creates what it needs
(a table, an index template, an index) if missing; :meth:`Sink.write` stores a
batch and says which events it did not take (:class:`WriteResult`), or raises
:class:`SinkUnavailable` when the whole batch did not go (the server is down,
slow or refusing): the exporter then keeps the batch and tries again later.
Writing an event twice must store it once, since a batch is re-sent whenever
its acknowledgement did not happen.

Exceptions::

    HttpqueueError
     └── SinkError
          └── SinkUnavailable   the batch was not written; try again later
"""
from __future__ import annotations

import dataclasses
import enum
import typing as t
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from httpqueue.exceptions import HttpqueueError
from httpqueue.export.events import Event


class SinkError(HttpqueueError):
    """A sink URL cannot be used (unknown scheme, bad option)."""


class SinkUnavailable(SinkError):
    """The sink did not take the batch (down, timing out, overloaded): nothing is acknowledged."""


class SinkKind(enum.StrEnum):
    """The sink URL schemes."""

    CLICKHOUSE = "clickhouse"
    ELASTICSEARCH = "elasticsearch"
    MONGODB = "mongodb"


@dataclasses.dataclass
class WriteResult:
    """What a sink did not store of a batch it was given (everything else it stored).

    ``retry``: event ids refused for now (an overloaded shard, a 429): kept and
    sent again. ``rejected``: event ids refused for good (a mapping error),
    with the reason: acknowledged, counted and logged, never retried.
    """

    retry: set[str] = dataclasses.field(default_factory=set)
    rejected: dict[str, str] = dataclasses.field(default_factory=dict)


class Sink(t.Protocol):
    """What the exporter needs of a sink."""

    kind: SinkKind
    label: str
    """Where it writes, without credentials (``host:port/db.table``): the consumer group and the metrics label."""

    def prepare(self) -> None:
        """Create the table, template or index if missing; :class:`SinkUnavailable` if the server is away."""

    def write(self, events: t.Sequence[Event]) -> WriteResult:
        """Store ``events`` (idempotently on :attr:`Event.event_id`)."""

    def close(self) -> None:
        """Release connections."""


def split_options(url: str, names: t.Iterable[str]) -> tuple[str, dict[str, str]]:
    """``url`` without the query parameters ``names`` (httpqueue's own options), and their values."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    wanted = set(names)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        (ours.__setitem__(key, value) if key in wanted else theirs.append((key, value)))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def location(url: str) -> str:
    """``host:port/path`` of ``url``: a sink's label without user or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}{parts.path}" if parts.port else f"{host}{parts.path}"


def from_url(url: str) -> Sink:
    """The sink a URL names: ``clickhouse://``, ``elasticsearch://`` (or ``http(s)://`` with ``+es``), ``mongodb://``.

    The client libraries are imported here, not at the top: each is an
    optional extra (``pip install httpqueue[export]``), needed only for the
    sinks in use.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("clickhouse", "clickhouses"):
        from httpqueue.export.sinks.clickhouse import ClickHouseSink

        return ClickHouseSink(url)
    if scheme in ("elasticsearch", "elasticsearchs", "es+http", "es+https"):
        from httpqueue.export.sinks.elasticsearch import ElasticsearchSink

        return ElasticsearchSink(url)
    if scheme in ("mongodb", "mongodb+srv"):
        from httpqueue.export.sinks.mongodb import MongoSink

        return MongoSink(url)
    raise SinkError(f"unknown sink {url.split('://')[0]!r}: use clickhouse://, elasticsearch:// or mongodb://")
