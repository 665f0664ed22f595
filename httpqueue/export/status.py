"""Every sink's export progress as seen from outside the exporters (``GET /v1/export``, the API's ``/metrics``).

An exporter knows only the sinks it serves; the API knows none. Both can read
what Redis keeps for each consumer group, though: ``XINFO GROUPS`` on each
shard's stream names the groups (``export:<sink>``, one per sink) with their
pending count and last delivered id, and the per-shard count hash holds what
each group lost to trims. This module sums that over the shards, with the
same per-shard counting as the exporter's own :meth:`GroupReader.status
<httpqueue.export.stream.GroupReader.status>` (:func:`~httpqueue.export.stream.shard_status`).

The cost is bounded: a few calls per shard and group, at most
:data:`MAX_GROUPS` groups, each call on one shard's keys (so it runs on a Redis
Cluster as on one server). Nothing here writes.
"""
from __future__ import annotations

import dataclasses
import typing as t

import redis

from httpqueue.connections import StoreClient
from httpqueue.export import switch
from httpqueue.export.exporter import GROUP_PREFIX
from httpqueue.export.stream import GroupStatus, acked_field, shard_status, text
from httpqueue.store.keys import Keys

MAX_GROUPS = 20
"""Most sinks reported (the first by name): a bound on the calls one status read makes."""


@dataclasses.dataclass(frozen=True)
class ConsumerStatus:
    """One exporter process in a sink's group, over all shards."""

    name: str
    pending: int   # entries it was handed and has not acknowledged
    idle_ms: int   # since its last read or acknowledgement on any shard (the smallest over the shards)


@dataclasses.dataclass(frozen=True)
class SinkStatus:
    """One sink's consumer group summed over the shards."""

    sink: str                       # the sink's label (the group's name without ``export:``)
    group: str
    counts: GroupStatus             # lag, pending, dropped, as the exporter counts them
    last_delivered_id: str | None   # the newest entry handed to the group on any shard
    last_acked_ms: int | None = None  # Unix ms of the group's last acknowledgement on any shard: its last success
    consumers: tuple[ConsumerStatus, ...] = ()

    @property
    def last_delivered_ms(self) -> int | None:
        """Unix milliseconds of the newest entry handed out: an entry id starts with the time it was written."""
        return int(self.last_delivered_id.split("-")[0]) if self.last_delivered_id else None


@dataclasses.dataclass(frozen=True)
class ExportStatus:
    """Whether events are written, the streams' bound, and each sink's progress."""

    enabled: bool
    max_events: int   # the bound of each shard's stream (the largest, should shards differ); 0 while off
    shards: int
    sinks: tuple[SinkStatus, ...]


def read(client: StoreClient, keys: Keys, *, consumers: bool = True) -> ExportStatus:
    """Every ``export:*`` group's counts over all shards; ``consumers=False`` skips the per-consumer calls.

    Redis errors other than "no such stream" propagate: the caller decides
    whether that is a 503 (the API) or a missing sample (``/metrics``).
    """
    bounds = switch.bounds(client, keys)
    groups: dict[str, _Sums] = {}
    for shard in range(keys.shards):
        for info in _groups(client, keys, shard):
            name = text(info.get("name"))
            if name not in groups and len(groups) >= MAX_GROUPS:
                continue
            sums = groups.setdefault(name, _Sums())
            sums.add(shard_status(client, keys, shard, info), text(info.get("last-delivered-id") or "0-0"),
                     int(client.hget(keys.export_counts(shard), acked_field(name)) or 0))
            if consumers:
                sums.add_consumers(client.xinfo_consumers(keys.events(shard), name))
    return ExportStatus(enabled=any(bounds), max_events=max(bounds, default=0), shards=keys.shards,
                        sinks=tuple(groups[name].status(name) for name in sorted(groups)))


def _groups(client: StoreClient, keys: Keys, shard: int) -> list[t.Mapping[str, t.Any]]:
    """The exporters' groups on one shard's stream (none when the stream does not exist yet)."""
    try:
        found = client.xinfo_groups(keys.events(shard))
    except redis.ResponseError:  # no such key: export never ran on this shard
        return []
    return [g for g in found if text(g.get("name")).startswith(GROUP_PREFIX)]


@dataclasses.dataclass
class _Sums:
    """One group's running totals while the shards are walked."""

    counts: GroupStatus = dataclasses.field(default_factory=lambda: GroupStatus(0, 0, 0))
    last_id: tuple[int, int] = (0, 0)
    acked_ms: int = 0
    consumers: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # name -> (pending, idle)

    def add(self, counts: GroupStatus, last_delivered: str, acked_ms: int) -> None:
        self.counts = self.counts + counts
        self.last_id = max(self.last_id, _id_pair(last_delivered))
        self.acked_ms = max(self.acked_ms, acked_ms)

    def add_consumers(self, replies: t.Iterable[t.Mapping[str, t.Any]]) -> None:
        for reply in replies:
            name = text(reply.get("name"))
            pending, idle = int(reply.get("pending") or 0), int(reply.get("idle") or 0)
            before = self.consumers.get(name)
            self.consumers[name] = (pending, idle) if before is None else (before[0] + pending, min(before[1], idle))

    def status(self, group: str) -> SinkStatus:
        last = None if self.last_id == (0, 0) else f"{self.last_id[0]}-{self.last_id[1]}"
        consumers = tuple(ConsumerStatus(name, pending, idle)
                          for name, (pending, idle) in sorted(self.consumers.items()))
        return SinkStatus(sink=group[len(GROUP_PREFIX):], group=group, counts=self.counts,
                          last_delivered_id=last, last_acked_ms=self.acked_ms or None, consumers=consumers)


def _id_pair(entry_id: str) -> tuple[int, int]:
    """A stream entry id as numbers, so ids compare by time, then sequence (``"0-0"`` is nothing)."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
