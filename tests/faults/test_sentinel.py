"""Redis Sentinel failover under load, and the replica-acknowledged create option.

One master, one replica, three sentinels (Debian's redis-server and
redis-sentinel on loopback ports); the service uses ``sentinel://`` URLs for
both the store (redis-py's Sentinel) and the Celery broker (kombu's sentinel
transport); the setup is ``tests/support/sentinel.py``. The master is killed
with SIGKILL in the middle of the load.
"""
from __future__ import annotations

import time
import typing as t
from pathlib import Path

import pytest
import redis
import requests

from httpqueue.embedded import free_port
from tests.support.faults import Load, Service, assert_duplicates_explained, drive, settle
from tests.support.processes import wait_until
from tests.support.receiver import Receiver
from tests.support.sentinel import MASTER, SentinelGroup, have_sentinel_tools

pytestmark = [pytest.mark.faults]

if not have_sentinel_tools():
    pytest.skip("Debian's redis-server and redis-sentinel are needed (apt-get install redis-sentinel)",
                allow_module_level=True)


@pytest.fixture
def cluster(tmp_path: Path) -> t.Iterator[SentinelGroup]:
    """A Sentinel setup of the test's own (the test kills its master), ready to fail over."""
    c = SentinelGroup(tmp_path).start()
    yield c
    c.stop()


def sentinel_service(tmp_path: Path, cluster: SentinelGroup, **overrides: t.Any) -> Service:
    return Service(tmp_path, redis_url=cluster.url, broker_url=cluster.url, sentinel_master=MASTER, **overrides)


def test_failover_to_the_replica_under_load(tmp_path: Path, cluster: SentinelGroup, receiver: Receiver,
                                            topic: str) -> None:
    path = f"/{topic}"
    service = sentinel_service(tmp_path, cluster, create_min_replicas=1, create_replica_timeout=0.5)
    try:
        service.start_api()
        service.start_worker("fault-sentinel", client=cluster.client("master"))
        load = Load()
        thread = drive(service.url, receiver, path, seconds=8, rate=30, load=load)
        time.sleep(2.5)
        cluster.procs["master"].kill()  # SIGKILL: no goodbye to replica or sentinels
        killed = time.monotonic()
        try:
            wait_until(lambda: cluster.current_master_port() == cluster.ports["replica"], 60,
                       "sentinels promote the replica")
        except AssertionError:
            print("SENTINEL", redis.Redis(port=cluster.sentinels[0]).sentinel_master(MASTER),
                  cluster.client("replica").info("replication"))
            raise
        failover_s = time.monotonic() - killed
        # creates are refused (503) until a replica acknowledges them again; here there is none left,
        # so bring up a fresh replica of the new master, as an operator (or orchestrator) would
        cluster.ports["master"] = free_port()
        cluster._redis("master", "--replicaof", "127.0.0.1", str(cluster.ports["replica"]))
        wait_until(lambda: requests.post(f"{service.url}/create", timeout=10, json={
            "topic": "probe", "delay": 3600, "callback": receiver.url("/probe")}).status_code == 200,
            40, "creates accepted again")
        recovered_s = time.monotonic() - killed
        thread.join()
        tally = settle(load, receiver, path, timeout=100)  # kombu retries the broker after 2, 4, ... 30 s
        tally.recovery_s = recovered_s
        tally.report("Sentinel failover (kill -9 master, WAIT 1 replica)", 1, failover_s=round(failover_s, 2),
                     answered_503=load.statuses[503])
        assert not tally.lost and not tally.fired_after_delete
        assert_duplicates_explained(tally, bound=40)
        assert load.statuses[200] > 50
    finally:
        service.stop()


def test_create_waits_for_a_replica_or_answers_503(tmp_path: Path, cluster: SentinelGroup,
                                                   receiver: Receiver) -> None:
    service = sentinel_service(tmp_path, cluster, create_min_replicas=1, create_replica_timeout=0.3)
    try:
        service.start_api(workers=1)
        body = {"topic": "wait", "delay": 3600, "callback": receiver.url("/wait")}
        created = requests.post(f"{service.url}/create", json=body, timeout=10)
        assert created.status_code == 200
        key = next(cluster.client("replica").scan_iter(f"hq:*:t:{created.json()['id']}"))
        assert cluster.client("replica").hget(key, "tp") == b"wait"  # on the replica before the 200
        cluster.procs["replica"].kill()
        cluster.procs["replica"].wait()
        refused = requests.post(f"{service.url}/create", json=body, timeout=10)
        assert refused.status_code == 503
        assert "replica" in refused.json()["error"]
    finally:
        service.stop()
