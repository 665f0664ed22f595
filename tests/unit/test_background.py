"""The background loop shared by the promoter and the schedule ticker (pure: no threads, no clock)."""
from __future__ import annotations

import threading
import typing as t

import redis

from httpqueue import events
from httpqueue.worker.background import MAX_BACKOFF, repeat
from httpqueue.exceptions import StoreUnavailable


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def test_outages_back_off_and_warn_bugs_are_survived_and_busy_passes_do_not_wait() -> None:
    stop = RecordingStop()
    outcomes: list[t.Any] = [StoreUnavailable("away"), redis.ConnectionError("refused"), ValueError("a bug"),
                             True, False]
    warned: list[t.Mapping[str, t.Any]] = []
    events.subscribe(lambda name, fields: warned.append(fields) if name == "unit-loop_error" else None)

    def one_pass() -> bool:
        outcome = outcomes.pop(0)
        if not outcomes:
            stop.set()
        if isinstance(outcome, Exception):
            raise outcome
        return t.cast(bool, outcome)

    repeat(one_pass, stop, 0.1, "unit-loop", who="test")
    # two outages: 0.1 x 2, 0.1 x 4; the bug: one interval; busy: none; idle: one interval
    assert stop.waits == [0.2, 0.4, 0.1, 0.1]
    assert [w["who"] for w in warned] == ["test", "test"] and "away" in warned[0]["error"]


def test_the_backoff_is_capped() -> None:
    stop = RecordingStop()
    failures = iter(range(12))

    def one_pass() -> bool:
        if next(failures) == 11:
            stop.set()
        raise StoreUnavailable("still away")

    repeat(one_pass, stop, 0.25, "unit-cap")
    assert stop.waits[:3] == [0.5, 1.0, 2.0]
    assert max(t.cast(list[float], stop.waits)) == MAX_BACKOFF and stop.waits[-1] == MAX_BACKOFF
