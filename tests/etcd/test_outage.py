"""etcd members killed with SIGKILL: one (nothing changes), then all (last-known settings, then recovery).

While no member runs, a real worker keeps delivering with the settings it
knew, ``/ready`` stays ready with a warning and ``httpqueue_etcd_up`` is 0;
a settings change is refused with 503, and the client retrying it gets it
applied once etcd is back.
"""
from __future__ import annotations

import threading
import time
import typing as t

import redis

from httpqueue.clock import now_ms
from httpqueue.embedded import EmbeddedRedis
from httpqueue.etcd.client import EtcdUnavailable
from tests.support.api import create, wait_states
from tests.support.etcd import EtcdNodes
from tests.support.processes import settings_env, start_worker, wait_until
from tests.support.receiver import Receiver
from tests.support.store import fresh_prefix
from tests.support import databases


def test_one_member_killed_changes_still_reach_every_node(nodes: EtcdNodes) -> None:
    client = nodes.app().test_client()
    other = nodes.context(key_prefix=fresh_prefix())
    nodes.etcd.kill(0)  # the endpoint both nodes try first, and where their watches are open
    answer = client.patch("/v1/topics/survivor", json={"concurrency": 4})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    wait_until(lambda: other.topics.get("survivor", now_ms())["concurrency"] == 4, 3.0, "the change on node B")
    assert other.cluster.mirror.up is True


def broker_of(server: EmbeddedRedis) -> str:
    """A Redis database of the test's own for the broker: no other test's worker takes its messages."""
    return databases.url(server.url, databases.BrokerDb.ETCD_OUTAGE)


def metric(client: t.Any, name: str) -> float | None:
    text = client.get("/metrics").get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_all_members_killed_delivery_goes_on_and_a_retried_change_applies_when_etcd_returns(
        nodes: EtcdNodes, redis_server: EmbeddedRedis, rclient: redis.Redis, receiver: Receiver) -> None:
    overrides = {"broker_url": broker_of(redis_server)}
    app = nodes.app(**overrides)
    client, ctx = app.test_client(), nodes.contexts[-1]
    assert client.patch("/v1/topics/steady", json={"rate_limit": 50}).status_code == 200
    assert client.post("/v1/topics/stopped/pause").status_code == 200
    worker = start_worker(settings_env(nodes.overrides(**overrides)), "etcd-worker", rclient, prefix=nodes.key_prefix)
    try:
        wait_until(lambda: [n["name"] for n in client.get("/v1/nodes").get_json()["nodes"]] == ["etcd-worker@localhost"],
                   10, "the worker in the registry (on an etcd lease)")
        assert nodes.client().get_prefix(f"{nodes.etcd_prefix}run/nodes/worker/")[0]
        nodes.etcd.kill_all()
        wait_until(lambda: ctx.cluster.mirror.up is False, 10, "the API node noticing etcd is down")
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.get_data(as_text=True)
        assert any("etcd unreachable" in w for w in ready.get_json()["warnings"])
        assert metric(client, "httpqueue_etcd_up") == 0

        delivered = [create(client, "steady", receiver.url("/steady"), delay=1) for _ in range(3)]
        held = create(client, "stopped", receiver.url("/stopped"), delay=1)
        for task_id in delivered:
            receiver.wait_task(task_id, timeout=20)
        assert ctx.topics.get("stopped", now_ms())["paused"] is True  # the last-known pause still holds
        assert receiver.for_task(held) == []
        refused = client.post("/v1/topics/stopped/resume")
        assert refused.status_code == 503 and "etcd" in refused.get_json()["error"]  # refused, not half-done
        assert refused.headers["Retry-After"] == "1"

        resumed: list[float] = []

        def retry_resume() -> None:  # what a client does with a 503: try again shortly
            for _ in range(300):
                if client.post("/v1/topics/stopped/resume").status_code == 200:
                    resumed.append(time.monotonic())
                    return
                time.sleep(0.1)

        retrier = threading.Thread(target=retry_resume)
        retrier.start()
        nodes.etcd.restart_all()
        back = time.monotonic()
        retrier.join(30)
        assert resumed and resumed[0] - back < 5, "the retried resume was not taken soon after etcd returned"
        receiver.wait_task(held, timeout=20)
        wait_until(lambda: ctx.cluster.mirror.up, 5, "the API node following etcd again")
        assert metric(client, "httpqueue_etcd_up") == 1
        assert "warnings" not in client.get("/ready").get_json()
        wait_states(client, [held], "succeeded")
    finally:
        worker.stop()


def test_quorum_lost_is_noticed_by_an_open_watch_and_changes_are_refused(nodes: EtcdNodes) -> None:
    """Two of three members killed: the survivor still answers, but has no leader (``hasleader`` ends the watch)."""
    node = nodes.context()
    assert node.cluster.mirror.up is True
    nodes.etcd.kill(1)
    nodes.etcd.kill(2)  # member 0, where the watch is open, survives alone
    wait_until(lambda: node.cluster.mirror.up is False, 15, "the open watch failing for want of a leader")
    started = time.monotonic()
    try:
        node.topics.pause("t")
    except EtcdUnavailable:
        pass
    else:
        raise AssertionError("a change was acknowledged by a member without quorum")
    assert time.monotonic() - started < 15
    nodes.etcd.restart(1)
    wait_until(lambda: node.cluster.mirror.up, 15, "the watch back once quorum returns")
    node.topics.pause("t")
    assert node.topics.get("t", now_ms())["paused"] is True
