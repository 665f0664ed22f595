"""A topic's own circuit-breaker threshold and cooldown replace the deployment's (``finish.lua``)."""
from __future__ import annotations

import typing as t

from httpqueue.context import Context

NOW = 1_800_000_000_000


def test_a_topics_own_threshold_and_cooldown_open_its_circuits(make_context: t.Callable[..., Context]) -> None:
    topics = make_context(breaker_threshold=5, breaker_cooldown=30).topics
    topics.configure("strict", {"breaker_threshold": 1, "breaker_cooldown": 2.5})
    topics.finish("strict", [("a", "h:80", "fail")], NOW)
    topics.finish("lenient", [("b", "h:80", "fail")], NOW)
    strict, lenient = topics.get("strict", NOW), topics.get("lenient", NOW)
    assert (strict["breaker_threshold"], strict["breaker_cooldown"]) == (1, 2.5)
    assert [(c["host"], c["open_until_ms"]) for c in strict["circuits"]] == [("h:80", NOW + 2500)]
    assert [c["open_until_ms"] for c in lenient["circuits"]] == [None]  # 1 failure of the deployment's 5
    topics.configure("strict", {"breaker_threshold": None, "breaker_cooldown": None})
    assert topics.get("strict", NOW)["breaker_threshold"] is None
