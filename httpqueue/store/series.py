"""Per-minute delivery statistics for the last two hours: the dashboard's charts.

Each delivery message adds its outcomes and a lateness histogram to one hash
per minute and shard (``hq:{shard}:series:<minute>``, Redis Cluster safe,
spread over the shards so no key is hot), in the round trip that records the
message. Reading a chart sums the shards of each minute. Percentiles come
from the histogram's buckets, so they are upper bounds at bucket resolution.
"""
from __future__ import annotations

import time
import typing as t

from httpqueue.states import ATTEMPT_ORDER, Outcome
from httpqueue.store import scripts
from httpqueue.store.scripts import ScriptCalls, translate_errors
from httpqueue.store.tasks import TaskStore

LATENESS_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 5000)
"""Upper bounds of the lateness histogram; beyond the last is the ``inf`` bucket."""

TTL_SECONDS = 7200


def bucket_of(late_ms: float) -> str:
    for bound in LATENESS_BUCKETS_MS:
        if late_ms <= bound:
            return f"l{bound}"
    return "linf"


def increments(outcomes: t.Sequence[tuple[Outcome, float]]) -> dict[str, int]:
    """Field increments for ``(outcome, lateness_ms)`` pairs (pure)."""
    fields: dict[str, int] = {}
    for outcome, late_ms in outcomes:
        fields[str(outcome)] = fields.get(str(outcome), 0) + 1
        late = max(0, int(late_ms))
        fields["late_n"] = fields.get("late_n", 0) + 1
        fields["late_sum"] = fields.get("late_sum", 0) + late
        fields[bucket_of(late)] = fields.get(bucket_of(late), 0) + 1
    return fields


def percentile(minute: t.Mapping[str, int], q: float) -> float | None:
    """The upper bound of the lateness bucket holding quantile ``q`` (pure)."""
    total = minute.get("late_n", 0)
    if not total:
        return None
    seen = 0
    for bound in LATENESS_BUCKETS_MS:
        seen += minute.get(f"l{bound}", 0)
        if seen >= q * total:
            return float(bound)
    return float("inf")


class Series:
    """Writes and reads the per-minute statistics."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.script = scripts.register(store.redis, "series")["series"]

    def key(self, shard: int, minute: int) -> str:
        return self.store.keys.series(shard, minute)

    def add(self, calls: ScriptCalls, shard: int, outcomes: t.Sequence[tuple[Outcome, float]], now_ms: int) -> None:
        """Queue the increments for one message in ``calls`` (the settle round trip)."""
        fields = increments(outcomes)
        if fields:
            args: list[t.Any] = [TTL_SECONDS]
            for name, value in fields.items():
                args += [name, value]
            calls.add(self.script, [self.key(shard, now_ms // 60_000)], args)

    @translate_errors
    def read(self, minutes: int, now_ms: int | None = None) -> list[dict[str, t.Any]]:
        """The last ``minutes`` minutes, oldest first: counts, mean and approximate p50/p99 lateness."""
        now_minute = (int(time.time() * 1000) if now_ms is None else now_ms) // 60_000
        wanted = list(range(now_minute - minutes + 1, now_minute + 1))
        pipe = self.store.redis.pipeline(transaction=False)
        for minute in wanted:
            for shard in range(self.store.keys.shards):
                pipe.hgetall(self.key(shard, minute))
        replies = iter(pipe.execute())
        points = []
        for minute in wanted:
            summed: dict[str, int] = {}
            for _ in range(self.store.keys.shards):
                for name, value in next(replies).items():
                    summed[name] = summed.get(name, 0) + int(value)
            n = summed.get("late_n", 0)
            points.append({
                "t": minute * 60, **{o.value: summed.get(o.value, 0) for o in ATTEMPT_ORDER},
                "late_mean_ms": round(summed.get("late_sum", 0) / n, 1) if n else None,
                "late_p50_ms": percentile(summed, 0.5), "late_p99_ms": percentile(summed, 0.99),
            })
        return points
