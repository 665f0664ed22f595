"""Grouping due tasks into delivery messages (pure)."""
from __future__ import annotations

from httpqueue.publish import BATCH_WINDOW_MS, MAX_BATCH, group_dispatches, message_name
from httpqueue.store.records import Dispatch


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
