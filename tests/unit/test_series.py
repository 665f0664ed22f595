"""The dashboard's per-minute statistics, as pure functions."""
from __future__ import annotations

from httpqueue.states import Outcome
from httpqueue.store.series import increments, percentile


def test_increments_count_outcomes_and_bucket_lateness() -> None:
    fields = increments([(Outcome.SUCCEEDED, 3), (Outcome.SUCCEEDED, 40), (Outcome.FAILED, 7000), (Outcome.RETRYING, -5)])
    assert fields["succeeded"] == 2 and fields["failed"] == 1 and fields["retrying"] == 1
    assert fields["late_n"] == 4 and fields["late_sum"] == 3 + 40 + 7000
    assert fields["l5"] == 2 and fields["l50"] == 1 and fields["linf"] == 1


def test_percentiles_are_bucket_upper_bounds() -> None:
    minute = increments([(Outcome.SUCCEEDED, 1)] * 98 + [(Outcome.SUCCEEDED, 80), (Outcome.SUCCEEDED, 300)])
    assert percentile(minute, 0.5) == 5
    assert percentile(minute, 0.99) == 100
    assert percentile({}, 0.5) is None
