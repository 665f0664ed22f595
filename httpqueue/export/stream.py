"""Reading the per-shard event streams through a consumer group: read, acknowledge, claim, count.

One :class:`GroupReader` is one consumer (an ``httpqueue export`` process) of
one consumer group (one sink) over every shard's stream. Consumer groups give
each entry to one consumer of the group, keep it pending until acknowledged,
and let another consumer take over the pending entries of one that died
(``XAUTOCLAIM`` after :attr:`GroupReader.claim_idle_ms`). Every call touches
one shard's keys only, so the same code runs on a Redis Cluster (script calls
are grouped per node by :class:`~httpqueue.store.scripts.ScriptCalls`).
"""
from __future__ import annotations

import dataclasses
import time
import typing as t
from importlib import resources

import redis

from httpqueue.connections import StoreClient
from httpqueue.export.events import Event, parse
from httpqueue.store.keys import Keys
from httpqueue.store.scripts import ScriptCalls


@dataclasses.dataclass(frozen=True)
class Entry:
    """One stream entry handed to this consumer: where it is (to acknowledge it) and what it says.

    ``event`` is ``None`` for an entry this version cannot read (a newer
    writer's kind): it is acknowledged and counted as rejected, not retried.
    """

    shard: int
    entry_id: str
    event: Event | None


@dataclasses.dataclass(frozen=True)
class GroupStatus:
    """How far one group is behind, summed over the shards (for ``/metrics``)."""

    lag: int          # entries in the streams the group has not been handed yet
    pending: int      # entries handed out and not acknowledged (being written, or held by a dead exporter)
    dropped: int      # entries trimmed by MAXLEN before the group read them, or while pending

    def __add__(self, other: GroupStatus) -> GroupStatus:
        return GroupStatus(self.lag + other.lag, self.pending + other.pending, self.dropped + other.dropped)


class GroupReader:
    """One exporter's view of one consumer group over all shard streams."""

    def __init__(self, client: StoreClient, keys: Keys, group: str, consumer: str,
                 claim_idle_ms: int = 60_000) -> None:
        self.client = client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        folder = resources.files("httpqueue.export")
        self._read = client.register_script((folder / "read.lua").read_text())
        self._trim = client.register_script((folder / "trim.lua").read_text())

    def ensure_groups(self) -> None:
        """Create the group on every shard's stream (from its first entry) unless it exists."""
        for shard in range(self.keys.shards):
            try:
                self.client.xgroup_create(self.keys.events(shard), self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_new(self, count: int) -> list[Entry]:
        """Up to ``count`` entries never handed to this group, spread over the shards, oldest first per shard."""
        per_shard = max(1, -(-count // self.keys.shards))
        calls = ScriptCalls(self.client)
        for shard in range(self.keys.shards):
            calls.add(self._read, [self.keys.events(shard), self.keys.export_counts(shard)],
                      [self.group, self.consumer, per_shard])
        entries: list[Entry] = []
        for shard, reply in enumerate(calls.execute()):
            items: list[t.Any] = reply[0]
            entries += [_entry(shard, item[0], item[1]) for item in items]
        return entries

    def read_own_pending(self, count: int) -> list[Entry]:
        """Entries this consumer was handed and never acknowledged (a restart under the same name)."""
        entries: list[Entry] = []
        for shard in range(self.keys.shards):
            reply: t.Any = self.client.xreadgroup(self.group, self.consumer, {self.keys.events(shard): "0"},
                                                  count=count)
            for _, items in reply or []:
                entries += [_entry(shard, entry_id, fields) for entry_id, fields in items if fields]
        return entries

    def claim_stale(self, count: int) -> list[Entry]:
        """Take over entries another consumer left pending longer than ``claim_idle_ms`` (it died or hangs).

        Entries trimmed while pending cannot be claimed: Redis drops them from
        the pending list and names them, and they are counted as dropped.
        """
        entries: list[Entry] = []
        for shard in range(self.keys.shards):
            reply = self.client.xautoclaim(self.keys.events(shard), self.group, self.consumer,
                                           self.claim_idle_ms, start_id="0-0", count=count)
            claimed, deleted = reply[1], (reply[2] if len(reply) > 2 else [])
            entries += [_entry(shard, entry_id, fields) for entry_id, fields in claimed if fields]
            if deleted:
                self.client.hincrby(self.keys.export_counts(shard), f"{self.group}:lost", len(deleted))
        return entries

    def ack(self, entries: t.Iterable[Entry]) -> None:
        """Acknowledge entries a sink accepted (or rejected for good): they leave the pending list.

        The time is kept too (:func:`acked_field`): Redis records when a group
        last read, not when it last acknowledged, and that is what says a sink
        still takes events, for whoever looks (``GET /v1/export``).
        """
        now_ms = int(time.time() * 1000)
        for shard, ids in _by_shard(entries).items():
            self.client.xack(self.keys.events(shard), self.group, *ids)
            self.client.hset(self.keys.export_counts(shard), acked_field(self.group), now_ms)

    def touch(self, entries: t.Iterable[Entry]) -> None:
        """Reset the idle time of entries still being retried, so no other exporter claims them meanwhile."""
        for shard, ids in _by_shard(entries).items():
            self.client.xclaim(self.keys.events(shard), self.group, self.consumer, 0, list(ids), justid=True)

    def trim_acknowledged(self) -> int:
        """Remove what every group (every sink) has acknowledged, in each shard; how many entries went.

        Without it a stream always holds about ``export_max_events`` entries
        (acknowledging does not delete); with it, about what the slowest sink
        still lacks. A sink added later starts from what is left.
        """
        calls = ScriptCalls(self.client)
        for shard in range(self.keys.shards):
            calls.add(self._trim, [self.keys.events(shard)], [])
        return sum(int(n) for n in calls.execute())

    def status(self) -> GroupStatus:
        """The group's lag, pending count and dropped total over all shards."""
        total = GroupStatus(0, 0, 0)
        for shard in range(self.keys.shards):
            stream = self.keys.events(shard)
            try:
                groups = self.client.xinfo_groups(stream)
            except redis.ResponseError:  # no stream yet
                continue
            info = next((g for g in groups if text(g.get("name")) == self.group), None)
            if info is not None:
                total = total + shard_status(self.client, self.keys, shard, info)
        return total


def acked_field(group: str) -> str:
    """The field of the shard's count hash holding the Unix ms of the group's last acknowledgement there."""
    return f"{group}:acked"


def shard_status(client: StoreClient, keys: Keys, shard: int, info: t.Mapping[str, t.Any]) -> GroupStatus:
    """One shard's counts for the group ``info`` describes (one entry of ``XINFO GROUPS`` on its stream).

    Shared by the exporter's own :meth:`GroupReader.status` and the API's view
    of every group (:mod:`httpqueue.export.status`), so both count drops alike.
    """
    group = text(info.get("name"))
    counts = client.hmget(keys.export_counts(shard), f"{group}:dropped", f"{group}:lost")
    return GroupStatus(lag=_lag(client, keys.events(shard), info), pending=int(info.get("pending") or 0),
                       dropped=sum(int(c or 0) for c in counts))


def _lag(client: StoreClient, stream: str, info: t.Mapping[str, t.Any]) -> int:
    """Redis's own count of entries not yet handed to the group, else (after a trim) a count of them."""
    if info.get("lag") is not None:
        return int(info["lag"])
    last = text(info.get("last-delivered-id")) or "0-0"
    return len(client.xrange(stream, min=f"({last}", max="+", count=100_000) or [])


def _entry(shard: int, entry_id: t.Any, fields: t.Any) -> Entry:
    """An :class:`Entry` from redis-py's reply (a dict of fields) or a Lua reply (a flat list)."""
    values = {text(k): text(v) for k, v in fields.items()} if isinstance(fields, dict) else _flat(fields)
    try:
        event: Event | None = parse(shard, text(entry_id), values)
    except (KeyError, ValueError):
        event = None
    return Entry(shard, text(entry_id), event)


def _flat(fields: t.Sequence[t.Any]) -> dict[str, str]:
    """A Lua reply's flat ``field, value, ...`` list as a dict."""
    return {text(fields[i]): text(fields[i + 1]) for i in range(0, len(fields) - 1, 2)}


def _by_shard(entries: t.Iterable[Entry]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for entry in entries:
        grouped.setdefault(entry.shard, []).append(entry.entry_id)
    return grouped


def text(value: t.Any) -> str:
    """A Redis reply value as ``str`` (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)
