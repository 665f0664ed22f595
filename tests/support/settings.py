"""The suite's settings: short timings so that retries, leases and the timer play out in seconds.

Imported by ``conftest.py`` (the session's settings), the fault suite and any
test that starts a service of its own; no test imports ``conftest``.
"""
from __future__ import annotations

import typing as t

TEST_SETTINGS: dict[str, t.Any] = {
    "retry_base": 1,
    "callback_allow": ("127.0.0.0/8", "::1"),
    "timer_horizon": 2.0,
    "promoter_interval": 0.05,
    "lease": 4.0,
    "callback_timeout": 2.0,
    "visibility_timeout": 60,
    "throttle_delay_max": 3.0,
    "shards": 4,
    "worker_concurrency": 2,
    "breaker_threshold": 5,
    "breaker_cooldown": 1.5,
    "topic_wait": 0.1,
}
