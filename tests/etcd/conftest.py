"""The etcd tests' cluster: one real 3-member etcd for the session, healed before each test."""
from __future__ import annotations

import typing as t

import pytest

from httpqueue.embedded import EmbeddedRedis
from tests.support.etcd import EtcdNodes, LocalEtcd, have_etcd


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[LocalEtcd]:
    if not have_etcd():
        pytest.skip("etcd is needed (apt-get install etcd-server)")
    cluster = LocalEtcd(tmp_path_factory.mktemp("etcd")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd(etcd_cluster: LocalEtcd) -> LocalEtcd:
    """The session's etcd with every member running (a test before may have killed some)."""
    etcd_cluster.restart_all()
    return etcd_cluster


@pytest.fixture
def nodes(etcd: LocalEtcd, redis_server: EmbeddedRedis) -> t.Iterator[EtcdNodes]:
    made = EtcdNodes(etcd, redis_server.url)
    yield made
    etcd.restart_all()
    made.close()
