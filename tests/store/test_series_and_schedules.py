"""The per-minute statistics (series.lua) and the schedules' compare-and-set (advance.lua), on a real Redis."""
from __future__ import annotations

import typing as t

import pytest

from httpqueue.context import Context
from httpqueue.states import Outcome
from httpqueue.store import ScriptCalls
from httpqueue.store.schedules import LEAD_MS, Schedule, ScheduleNotFound, next_tick_ms
from httpqueue.store.series import TTL_SECONDS

NOW = 1_750_000_000_000  # 2025-06-15T15:06:40Z
MINUTE = NOW // 60_000


@pytest.fixture
def context(make_context: t.Callable[..., Context]) -> Context:
    return make_context(shards=2)


# -- series ----------------------------------------------------------------------------------------------

def add(context: Context, shard: int, outcomes: list[tuple[Outcome, float]], now: int) -> None:
    calls = ScriptCalls(context.store.redis)
    context.series.add(calls, shard, outcomes, now)
    if calls.calls:
        calls.execute()


def test_series_adds_outcomes_and_lateness_to_the_shard_minute(context: Context) -> None:
    add(context, 0, [(Outcome.SUCCEEDED, 3), (Outcome.FAILED, 40)], NOW)
    add(context, 0, [(Outcome.SUCCEEDED, 7000)], NOW + 1_000)
    key = context.keys.series(0, MINUTE)
    stored = {k: int(v) for k, v in context.store.redis.hgetall(key).items()}
    assert stored == {"succeeded": 2, "failed": 1, "late_n": 3, "late_sum": 7043, "l5": 1, "l50": 1, "linf": 1}
    assert TTL_SECONDS - 5 <= context.store.redis.ttl(key) <= TTL_SECONDS
    assert context.store.redis.exists(context.keys.series(1, MINUTE)) == 0


def test_series_read_sums_the_shards_of_each_minute(context: Context) -> None:
    add(context, 0, [(Outcome.SUCCEEDED, 3)] * 3, NOW)
    add(context, 1, [(Outcome.RETRYING, 30), (Outcome.THROTTLED, 300)], NOW)
    add(context, 1, [(Outcome.SUCCEEDED, 1)], NOW - 60_000)
    earlier, now = context.series.read(2, NOW)
    assert now["t"] == MINUTE * 60 and earlier["t"] == (MINUTE - 1) * 60
    assert (now["succeeded"], now["retrying"], now["throttled"], now["failed"]) == (3, 1, 1, 0)
    assert now["late_mean_ms"] == round((9 + 30 + 300) / 5, 1)
    assert now["late_p50_ms"] == 5 and now["late_p99_ms"] == 500
    assert earlier["succeeded"] == 1 and earlier["late_p50_ms"] == 5
    [empty] = context.series.read(1, NOW + 3_600_000)
    assert empty["succeeded"] == 0 and empty["late_mean_ms"] is None


def test_series_of_no_attempts_writes_nothing(context: Context) -> None:
    calls = ScriptCalls(context.store.redis)
    context.series.add(calls, 0, [], NOW)
    assert calls.calls == []


# -- schedules and advance -------------------------------------------------------------------------------

def schedule(schedule_id: str = "daily", cron: str = "0 9 * * *", tz: str = "Europe/Berlin",
             paused: bool = False) -> Schedule:
    return Schedule(schedule_id, cron, tz, {"topic": "s", "callback": "http://127.0.0.1:9/"}, paused=paused)


def test_save_stores_the_definition_and_its_next_tick(context: Context) -> None:
    schedules = context.schedules
    nxt = schedules.save(schedule(), NOW)
    assert nxt == next_tick_ms("0 9 * * *", "Europe/Berlin", NOW) == 1_750_057_200_000  # 2025-06-16 09:00 CEST
    assert context.store.redis.zscore(context.keys.schedule_next(), "daily") == nxt
    assert context.store.redis.hexists(context.keys.schedule_defs(), "daily")
    saved, tick = schedules.get("daily")
    assert saved == schedule() and tick == nxt


def test_advance_moves_the_next_tick_once_however_many_workers_race(context: Context) -> None:
    schedules = context.schedules
    tick = schedules.save(schedule("every", "* * * * * *", "UTC"), NOW)
    [(due, due_tick)] = schedules.due(tick - LEAD_MS)
    assert due.id == "every" and due_tick == tick
    assert schedules.advance(due, tick, f"every@{tick}", tick) is True
    assert context.store.redis.zscore(context.keys.schedule_next(), "every") == tick + 1_000
    loser, _ = schedules.get("every")
    assert schedules.advance(loser, tick, f"every@{tick}", tick) is False  # another worker already moved it
    assert context.store.redis.zscore(context.keys.schedule_next(), "every") == tick + 1_000
    saved, _ = schedules.get("every")
    assert saved.last_tick_ms == tick and saved.last_task_id == f"every@{tick}"


def test_advance_after_downtime_skips_to_the_next_tick_after_now(context: Context) -> None:
    schedules = context.schedules
    tick = schedules.save(schedule("every", "* * * * * *", "UTC"), NOW)
    later = tick + 3_600_000 + 500  # an hour of missed ticks: only the one handled now fires
    assert schedules.advance(schedules.get("every")[0], tick, "x", later) is True
    assert context.store.redis.zscore(context.keys.schedule_next(), "every") == tick + 3_601_000


def test_advance_of_a_paused_or_deleted_schedule_does_nothing(context: Context) -> None:
    schedules = context.schedules
    tick = schedules.save(schedule(), NOW)
    paused, nxt = schedules.set_paused("daily", True, NOW)
    assert nxt is None and context.store.redis.zscore(context.keys.schedule_next(), "daily") is None
    assert schedules.advance(paused, tick, "x", NOW) is False
    assert context.store.redis.zscore(context.keys.schedule_next(), "daily") is None  # still paused
    assert schedules.due(tick + 10 * 86_400_000) == []
    schedules.delete("daily")
    with pytest.raises(ScheduleNotFound):
        schedules.get("daily")
    with pytest.raises(ScheduleNotFound):
        schedules.delete("daily")
    assert context.store.redis.exists(context.keys.schedule_defs(), context.keys.schedule_next()) == 0
