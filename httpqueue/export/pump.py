"""Moving events from one consumer group to one sink: batch, write, acknowledge, back off.

A :class:`Pump` is the exporter's loop for one sink, one :meth:`Pump.step` at
a time (the thread in :mod:`httpqueue.export.exporter` calls it and sleeps as
long as it says), so its tests drive it without threads or real waiting.

An entry is acknowledged only after the sink took it (or refused it for good),
so an exporter that dies holding a batch leaves it pending, and another one
claims it. While a sink is down the pump keeps its batch and tries it again
with exponential backoff; it reads nothing more meanwhile, so events wait in
Redis, where the stream's MAXLEN bounds them, and the task pipeline (which
only appends to the stream) never waits for a sink.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import typing as t

from httpqueue.export.events import Event, event_id
from httpqueue.export.sinks import Sink, SinkUnavailable
from httpqueue.export.stream import Entry, GroupReader, GroupStatus

LOGGER = logging.getLogger("httpqueue.export")

BACKOFF_FIRST = 0.5
"""Seconds before the first retry of a batch a sink did not take."""

BACKOFF_MAX = 30.0
"""Longest wait between two tries of a batch."""

IDLE_WAIT = 0.2
"""Seconds between two reads when the streams had nothing new."""

CLAIM_EVERY = 10.0
"""Seconds between two looks for entries a dead exporter left pending."""

STATUS_EVERY = 5.0
"""Seconds between two refreshes of the lag, pending and dropped counts (and trims of what every sink has)."""


@dataclasses.dataclass
class SinkStats:
    """What ``/metrics`` says about one sink (the exporter's collector reads it)."""

    exported: int = 0
    rejected: int = 0
    failures: int = 0
    retried_items: int = 0
    last_success: float = 0.0
    last_error: str = ""
    status: GroupStatus = dataclasses.field(default_factory=lambda: GroupStatus(0, 0, 0))


@dataclasses.dataclass
class Backoff:
    """Exponential backoff: :meth:`failed` gives the next wait, :meth:`reset` starts over."""

    first: float = BACKOFF_FIRST
    most: float = BACKOFF_MAX
    current: float = 0.0

    def failed(self) -> float:
        self.current = self.first if not self.current else min(self.most, self.current * 2)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


class Pump:
    """One sink's export loop over one consumer group."""

    def __init__(self, reader: GroupReader, sink: Sink, *, batch: int = 500,
                 clock: t.Callable[[], float] = time.monotonic, backoff: Backoff | None = None) -> None:
        self.reader = reader
        self.sink = sink
        self.batch = batch
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.stats = SinkStats()
        self.carry: list[Entry] = []      # entries handed to us and not yet taken by the sink
        self._recovered = False
        self._claimed_at = -CLAIM_EVERY
        self._status_at = -STATUS_EVERY

    def step(self) -> float:
        """Do one round of work; returns how many seconds to wait before the next one."""
        if not self.carry:
            self.carry = self._gather()
        self._refresh_status()
        if not self.carry:
            return IDLE_WAIT
        return self._write()

    def _gather(self) -> list[Entry]:
        """The next entries to write: our own pending ones after a restart, then a dead exporter's, then new."""
        if not self._recovered:
            self.reader.ensure_groups()
            self._recovered = True
            own = self.reader.read_own_pending(self.batch)
            if own:
                return own
        if self.clock() - self._claimed_at >= CLAIM_EVERY:
            self._claimed_at = self.clock()
            claimed = self.reader.claim_stale(self.batch)
            if claimed:
                LOGGER.warning("export to %s: took over %d events another exporter left pending",
                               self.sink.label, len(claimed))
                return claimed
        return self.reader.read_new(self.batch)

    def _write(self) -> float:
        unreadable = [e for e in self.carry if e.event is None]
        entries = [e for e in self.carry if e.event is not None]
        try:
            result = self.sink.write([t.cast(Event, e.event) for e in entries]) if entries else None
        except SinkUnavailable as exc:
            return self._failed(str(exc))
        retry = result.retry if result else set()
        rejected = dict(result.rejected) if result else {}
        for entry in unreadable:
            rejected[_eid(entry)] = "an event kind this httpqueue version does not know"
        done = [e for e in self.carry if _eid(e) not in retry]
        self.reader.ack(done)
        self._count(len(done) - len(rejected), rejected)
        self.carry = [e for e in self.carry if _eid(e) in retry]
        if self.carry:
            self.stats.retried_items += len(self.carry)
            return self._failed(f"{len(self.carry)} events refused for now (overloaded)")
        self.backoff.reset()
        return 0.0

    def _failed(self, why: str) -> float:
        """Keep the batch (and our claim on it), and wait longer each time."""
        self.stats.failures += 1
        self.stats.last_error = why
        wait = self.backoff.failed()
        LOGGER.warning("export to %s failed (%s); %d events kept, next try in %.1f s",
                       self.sink.label, why, len(self.carry), wait)
        try:
            self.reader.touch(self.carry)
        except Exception:  # noqa: BLE001 - Redis away too: the entries stay pending all the same
            LOGGER.warning("export to %s: could not renew the claim on %d events", self.sink.label, len(self.carry))
        return wait

    def _count(self, exported: int, rejected: t.Mapping[str, str]) -> None:
        self.stats.exported += exported
        self.stats.last_success = time.time()
        if rejected:
            self.stats.rejected += len(rejected)
            first = next(iter(rejected.items()))
            LOGGER.error("export to %s refused %d events for good (dropped), e.g. %s: %s",
                         self.sink.label, len(rejected), *first)

    def _refresh_status(self) -> None:
        if self.clock() - self._status_at >= STATUS_EVERY:
            self._status_at = self.clock()
            try:
                self.reader.trim_acknowledged()
                self.stats.status = self.reader.status()
            except Exception:  # noqa: BLE001 - metrics must not stop the export
                LOGGER.debug("export status of %s unavailable", self.sink.label, exc_info=True)


def _eid(entry: Entry) -> str:
    """The id a sink reports an entry by: its event id (made the same way for an unreadable entry)."""
    return event_id(entry.shard, entry.entry_id)
