"""Grouping due tasks into delivery messages, and how each waits for its time (pure)."""
from __future__ import annotations

import datetime
import time

import pytest

from httpqueue import rabbitmq
from httpqueue.publish import (
    BATCH_WINDOW_MS,
    LEAD_MS,
    MAX_BATCH,
    Message,
    celery_eta_message,
    group_dispatches,
    message_name,
    native_delayed_message,
)
from httpqueue.store.records import Dispatch
from httpqueue.worker.tasks import eta_anchor


def test_tasks_due_together_fill_messages_of_max_batch() -> None:
    dispatches = [Dispatch(f"id{n}", 1, 1000, topic="a") for n in range(2 * MAX_BATCH + 5)]
    groups = group_dispatches(dispatches)
    assert [len(g) for g in groups] == [MAX_BATCH, MAX_BATCH, 5]
    assert message_name(groups[0]) == f"deliver a x{MAX_BATCH}"


def test_a_message_holds_one_topic_and_one_window() -> None:
    dispatches = [Dispatch("a1", 1, 1000, topic="a"), Dispatch("b1", 1, 1000, topic="b"),
                  Dispatch("a2", 1, 1000 + BATCH_WINDOW_MS, topic="a"),
                  Dispatch("a3", 1, 1001 + BATCH_WINDOW_MS, topic="a")]
    assert [[d.task_id for d in g] for g in group_dispatches(dispatches)] == [["a1", "a2"], ["a3"], ["b1"]]


# -- how a message waits: a Celery ETA (Redis) or RabbitMQ's delay levels plus offsets

def test_a_celery_eta_message_is_due_a_lead_before_its_earliest_task_and_counts_offsets_from_then() -> None:
    group = [Dispatch("a", 1, 10_000, topic="t"), Dispatch("b", 2, 10_060, topic="t")]
    message = celery_eta_message(group, clock_ms=7_500)
    assert message.countdown == (2_500 - LEAD_MS) / 1000 and message.delay_s == 0
    assert message.items == [["a", 1, LEAD_MS], ["b", 2, LEAD_MS + 60]]


def test_a_message_due_within_the_lead_goes_at_once_with_the_rest_as_offsets() -> None:
    group = [Dispatch("a", 1, 10_000, topic="t")]
    message = celery_eta_message(group, clock_ms=10_000 - LEAD_MS // 2)
    assert message.countdown is None and message.items == [["a", 1, LEAD_MS // 2]]


def test_attempts_count_from_the_messages_eta_not_from_when_the_pool_got_it() -> None:
    started = time.monotonic()
    late = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(milliseconds=30)
    assert eta_anchor(late.isoformat(), started) == pytest.approx(started - 0.030, abs=0.005)
    assert eta_anchor(late.replace(tzinfo=None).isoformat(), started) == pytest.approx(started - 0.030, abs=0.005)
    assert eta_anchor(None, started) == started


def test_a_task_already_due_goes_at_once_either_way() -> None:
    group = [Dispatch("a", 1, 1_000, topic="t")]
    assert celery_eta_message(group, clock_ms=5_000).countdown is None
    assert native_delayed_message(group, clock_ms=5_000) == Message([["a", 1, 0]])


@pytest.mark.parametrize("wait_ms, seconds, rest_ms", [
    (-5, 0, 0), (0, 0, 0), (999, 0, 999), (1_000, 1, 0), (1_001, 1, 1), (2_700, 2, 700), (59_999, 59, 999)])
def test_waits_split_into_whole_seconds_for_the_broker_and_the_rest_for_the_worker(
        wait_ms: int, seconds: int, rest_ms: int) -> None:
    assert rabbitmq.split_wait(wait_ms) == rabbitmq.Split(seconds, rest_ms)


def test_a_delayed_message_keeps_every_task_s_fraction_in_its_offset() -> None:
    """The broker holds 2 s of a 2.7 s wait; the worker waits 700 ms (and 760 ms for the second task)."""
    group = [Dispatch("a", 1, 12_700, topic="t"), Dispatch("b", 1, 12_760, topic="t")]
    message = native_delayed_message(group, clock_ms=10_000)
    assert message.delay_s == 2 and message.countdown is None  # no Celery ETA: nothing held unacknowledged
    assert message.items == [["a", 1, 700], ["b", 1, 760]]


def test_a_message_due_within_a_second_goes_at_once_with_the_whole_wait_as_offset() -> None:
    group = [Dispatch("a", 1, 10_450, topic="t")]
    assert native_delayed_message(group, clock_ms=10_000) == Message([["a", 1, 450]])


def test_the_delayed_route_is_celery_s_own_for_the_whole_seconds() -> None:
    route = rabbitmq.delayed_route(5, "httpqueue")
    assert route["exchange"] == "celery_delayed_27"
    assert route["routing_key"] == "0." * 25 + "1.0.1.httpqueue"
