"""Topic settings, schedules and the allow-list in etcd: every node applies a change within a second.

Node B has a Redis key prefix of its own in the propagation tests, so what it
holds came through its own etcd watch, not through node A's copy in Redis.
"""
from __future__ import annotations

import json
import threading
import time
import typing as t

from httpqueue.clock import now_ms
from httpqueue.delivery.ssrf import CallbackPolicy
from httpqueue.etcd.client import EtcdUnavailable
from httpqueue.etcd.keys import EtcdKeys
from httpqueue.etcd.watch import SettingsMirror
from httpqueue.store.topics import TopicSettings
from tests.support.etcd import EtcdNodes
from tests.support.processes import wait_until
from tests.support.store import fresh_prefix

PROPAGATION = 1.0
"""The bound the documentation promises for a change to reach every node."""


def applied_within(predicate: t.Callable[[], t.Any], what: str, bound: float = PROPAGATION) -> float:
    """Seconds until ``predicate`` held; fails if that took longer than ``bound``."""
    start = time.monotonic()
    wait_until(predicate, bound, what, interval=0.01)
    return time.monotonic() - start


def test_topic_change_through_one_node_is_applied_by_another_within_a_second(nodes: EtcdNodes) -> None:
    client = nodes.app().test_client()
    other = nodes.context(key_prefix=fresh_prefix())
    answer = client.patch("/v1/topics/reports", json={"rate_limit": 5, "concurrency": 3})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["rate_limit"] == 5
    applied_within(lambda: other.topics.get("reports", now_ms())["concurrency"] == 3, "node B's limits")
    assert other.topics.get("reports", now_ms())["rate_limit"] == 5

    assert client.patch("/v1/topics/reports", json={"breaker_threshold": 2, "breaker_cooldown": 4}).status_code == 200
    applied_within(lambda: other.topics.get("reports", now_ms())["breaker_cooldown"] == 4, "node B's breaker")
    other.topics.finish("reports", [("a", "h:80", "fail"), ("b", "h:80", "fail")], now_ms())
    assert other.topics.get("reports", now_ms())["circuits"][0]["state"] == "open"  # at 2 failures, not 5

    assert client.post("/v1/topics/reports/pause").get_json()["paused"] is True
    applied_within(lambda: other.topics.get("reports", now_ms())["paused"], "node B's pause")
    assert client.patch("/v1/topics/reports", json={"rate_limit": None}).status_code == 200
    applied_within(lambda: other.topics.get("reports", now_ms())["rate_limit"] is None, "node B's cleared limit")
    assert other.topics.get("reports", now_ms())["paused"] is True  # the other settings stayed


def test_schedule_through_one_node_is_applied_by_another_within_a_second(nodes: EtcdNodes) -> None:
    client = nodes.app().test_client()
    other = nodes.context(key_prefix=fresh_prefix())
    body = {"id": "nightly", "cron": "0 3 * * *", "task": {"topic": "jobs", "callback": "http://127.0.0.1:9/x"}}
    assert client.post("/v1/schedules", json=body).status_code == 201
    applied_within(lambda: other.schedules.get("nightly")[1] is not None, "node B's schedule")
    assert other.schedules.get("nightly")[0].cron == "0 3 * * *"

    assert client.post("/v1/schedules/nightly/pause").get_json()["paused"] is True
    applied_within(lambda: other.schedules.get("nightly")[0].paused, "node B's paused schedule")
    assert other.schedules.get("nightly")[1] is None  # no next tick while paused

    assert client.delete("/v1/schedules/nightly").status_code == 200
    applied_within(lambda: [s.id for s, _ in other.schedules.all()] == [], "node B's deletion")
    assert client.get("/v1/schedules/nightly").status_code == 404


def test_allow_list_in_etcd_replaces_each_nodes_own(nodes: EtcdNodes) -> None:
    node = nodes.context(callback_allow=())
    etcd = nodes.client()
    assert node.callback_policy == CallbackPolicy.from_strings(())
    etcd.put(f"{nodes.etcd_prefix}settings/callback_allow", json.dumps(["10.1.0.0/16"]))
    applied_within(lambda: node.callback_policy == CallbackPolicy.from_strings(["10.1.0.0/16"]), "the allow-list")
    etcd.delete(f"{nodes.etcd_prefix}settings/callback_allow")
    applied_within(lambda: node.callback_policy == CallbackPolicy.from_strings(()), "the node's own list again")


def test_a_node_started_later_reads_every_setting(nodes: EtcdNodes) -> None:
    first = nodes.context()
    first.topics.pause("held-topic")
    first.topics.configure("held-topic", {"failure_callback": "http://127.0.0.1:9/failed"})
    late = nodes.context(key_prefix=fresh_prefix())  # its Redis copy is empty: it must read etcd at start
    topic = late.topics.get("held-topic", now_ms())
    assert (topic["paused"], topic["failure_callback"]) == (True, "http://127.0.0.1:9/failed")


def test_concurrent_edits_of_one_topic_lose_neither(nodes: EtcdNodes) -> None:
    """Two nodes edit different settings of one topic at the same moment, 25 times: both edits land each time."""
    one, two = nodes.context(), nodes.context()
    rounds, start = 25, threading.Barrier(2)
    errors: list[BaseException] = []

    def edit(node: t.Any, name: str) -> None:
        try:
            for i in range(1, rounds + 1):
                start.wait(timeout=10)
                node.topics.configure("shared", {name: i})
                start.wait(timeout=10)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=edit, args=(one, "concurrency")),
               threading.Thread(target=edit, args=(two, "rate_limit"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    kv = nodes.client().get(f"{nodes.etcd_prefix}settings/topics/shared")
    assert kv is not None
    stored = TopicSettings.from_json(t.cast(str, kv.value))
    assert (stored.concurrency, stored.rate_limit) == (rounds, rounds)
    assert kv.mod_revision - kv.create_revision == 2 * rounds - 1  # every edit was a write of its own


def test_writes_are_refused_not_lost_while_etcd_is_down(nodes: EtcdNodes) -> None:
    node = nodes.context()
    nodes.etcd.kill_all()
    try:
        node.topics.configure("t", {"concurrency": 2})
    except EtcdUnavailable:
        pass
    else:
        raise AssertionError("a settings change was acknowledged while no etcd member was running")


def test_a_watch_from_a_compacted_revision_reads_every_setting_again(nodes: EtcdNodes) -> None:
    etcd, key = nodes.client(), f"{nodes.etcd_prefix}settings/topics/compacted"
    etcd.put(key, TopicSettings(concurrency=1).to_json())
    latest = etcd.put(key, TopicSettings(concurrency=2).to_json())
    etcd.call("kv/compaction", {"revision": str(latest), "physical": True})
    node = nodes.context(key_prefix=fresh_prefix())
    node.cluster.stop()  # its own watch is current; follow one that starts from before the compaction
    mirror = SettingsMirror(nodes.client(), EtcdKeys(nodes.etcd_prefix), node.topics, node.schedules, lambda _: None)
    mirror.revision = 1
    reads: list[int] = []
    read_all = mirror.sync

    def counted_sync() -> None:
        reads.append(1)
        read_all()

    mirror.sync = counted_sync  # type: ignore[method-assign]
    node.store.redis.delete(node.keys.for_topic("compacted").config)  # what the copy holds must come from etcd
    stop = threading.Event()
    follower = threading.Thread(target=mirror.follow, args=(stop,), daemon=True)
    follower.start()
    try:
        wait_until(lambda: node.topics.get("compacted", now_ms())["concurrency"] == 2, 5, "the setting read again")
        assert mirror.revision >= latest
        assert reads == [1]  # read whole once etcd said the revision was compacted, not replayed event by event
    finally:
        stop.set()
