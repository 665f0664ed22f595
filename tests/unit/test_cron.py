"""Next-tick computation of schedules (pure)."""
from __future__ import annotations

import datetime
import zoneinfo

from httpqueue.store.schedules import check_cron, check_timezone, next_tick_ms

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def ms(*args: int) -> int:
    return int(datetime.datetime(*args, tzinfo=BERLIN).timestamp() * 1000)


def test_daily_tick_keeps_local_time_across_the_spring_dst_change() -> None:
    # 09:00 Berlin: 08:00 UTC in winter, 07:00 UTC in summer (DST starts 2026-03-29)
    first = next_tick_ms("0 9 * * *", "Europe/Berlin", ms(2026, 3, 28, 10, 0))
    assert first == ms(2026, 3, 29, 9, 0)
    assert datetime.datetime.fromtimestamp(first / 1000, datetime.timezone.utc).hour == 7
    assert next_tick_ms("0 9 * * *", "Europe/Berlin", first) - first == 24 * 3600 * 1000


def test_a_time_skipped_by_dst_fires_at_the_next_existing_time() -> None:
    tick = next_tick_ms("30 2 * * *", "Europe/Berlin", ms(2026, 3, 28, 3, 0))
    assert datetime.datetime.fromtimestamp(tick / 1000, BERLIN).strftime("%m-%d %H:%M") == "03-29 03:00"


def test_seconds_field_and_validation() -> None:
    assert next_tick_ms("* * * * * */5", "UTC", 1_000_000_001_000) == 1_000_000_005_000
    assert check_cron("61 * * * *") and check_cron("not cron") and check_cron("*/5 * * * *") is None
    assert check_timezone("Mars/Olympus") and check_timezone("America/New_York") is None
