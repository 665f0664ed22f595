"""The node registry on the suite's Redis, ``GET /v1/nodes`` and the gauge, with real API and worker processes."""
from __future__ import annotations

import typing as t
import uuid

import redis
import requests

from httpqueue import nodes
from httpqueue.config import Settings
from httpqueue.embedded import free_port
from httpqueue.store.keys import Keys
from tests.support.processes import start_api, start_worker, wait_until
from tests.support.receiver import Answer, Receiver


def registry(rclient: redis.Redis) -> nodes.RedisRegistry:
    """A registry under a prefix of the test's own (nothing else beats there)."""
    return nodes.RedisRegistry(rclient, Keys(f"hqn{uuid.uuid4().hex[:8]}"))


def test_a_beat_lists_the_node_until_its_ttl_runs_out(rclient: redis.Redis) -> None:
    reg = registry(rclient)
    worker = nodes.new_identity(nodes.Role.WORKER, "w1@here")
    api = nodes.new_identity(nodes.Role.API, "127.0.0.1:9")
    reg.beat(worker, 3, ttl=0.4)
    reg.beat(api, 12.5, ttl=30)
    listed = reg.live()
    assert [n.identity for n in listed] == [api, worker]  # API processes first
    assert listed[1].load == 3 and listed[0].load == 12.5
    assert reg.counts() == {nodes.Role.API: 1, nodes.Role.WORKER: 1}
    assert reg.departed(nodes.Role.WORKER) == []
    wait_until(lambda: reg.departed(nodes.Role.WORKER) == [worker.incarnation], 5, "the worker's beat to run out")
    assert [n.identity for n in reg.live()] == [api]
    reg.remove(nodes.Role.WORKER, worker.incarnation)
    assert reg.departed(nodes.Role.WORKER) == []
    reg.leave(api)
    assert reg.live() == []


def test_a_restarted_worker_with_the_same_name_is_a_new_incarnation(rclient: redis.Redis) -> None:
    reg = registry(rclient)
    first = nodes.new_identity(nodes.Role.WORKER, "same@host")
    second = nodes.new_identity(nodes.Role.WORKER, "same@host")
    assert first.incarnation != second.incarnation
    reg.beat(first, 0, ttl=0.3)
    reg.beat(second, 0, ttl=30)
    wait_until(lambda: reg.departed(nodes.Role.WORKER) == [first.incarnation], 5, "the first incarnation's death")
    assert [n.identity.incarnation for n in reg.live()] == [second.incarnation]


def test_heartbeat_is_steady_only_after_a_whole_ttl_of_beats(rclient: redis.Redis) -> None:
    now = [100.0]
    reg = registry(rclient)
    beat = nodes.Heartbeat(reg, nodes.new_identity(nodes.Role.WORKER, "w"), interval=1, ttl=6, clock=lambda: now[0])
    assert beat.beat_once() and not beat.steady()
    for _ in range(6):
        now[0] += 1
        beat.beat_once()
    assert beat.steady()
    now[0] += 3  # a gap of three intervals: beats missed
    assert not beat.steady()
    beat.beat_once()
    assert not beat.steady()  # steady again only a ttl after the gap


def test_reaper_releases_dead_incarnations_but_never_its_own_and_only_when_steady(rclient: redis.Redis) -> None:
    now = [0.0]
    reg = registry(rclient)
    me = nodes.Heartbeat(reg, nodes.new_identity(nodes.Role.WORKER, "me"), interval=1, ttl=2, clock=lambda: now[0])
    dead = nodes.new_identity(nodes.Role.WORKER, "dead")
    released: list[str] = []
    reaper = nodes.Reaper(reg, lambda inc, _: released.append(inc) or 4, me, interval=1, clock=lambda: now[0])
    reg.beat(dead, 0, ttl=0.2)
    me.ttl = 0.2  # my own entry runs out too: a stalled beat must not make me release my own attempts
    me.beat_once()
    wait_until(lambda: len(reg.departed(nodes.Role.WORKER)) == 2, 5, "both beats to run out")
    assert reaper.reap(0) == 0 and released == []  # not steady yet
    for _ in range(3):
        now[0] += 1
        me.beat_once()
    me.ttl = 2
    wait_until(lambda: len(reg.departed(nodes.Role.WORKER)) == 2, 5, "both beats to run out")
    assert reaper.reap(0) == 4 and released == [dead.incarnation]
    assert reg.departed(nodes.Role.WORKER) == [me.identity.incarnation]  # removed: the dead one only
    assert reaper.reap(0) == 0  # at most one look per interval


def test_v1_nodes_lists_the_api_process_and_the_worker(env: dict[str, str], settings: Settings, worker: t.Any,
                                                       rclient: redis.Redis) -> None:
    port = free_port()
    api = start_api(env, port, name="api-nodes")
    try:
        url = f"http://127.0.0.1:{port}"

        def listed() -> dict[str, t.Any] | None:
            body = requests.get(f"{url}/v1/nodes", timeout=5).json()
            apis = [n for n in body["nodes"] if n["role"] == "api" and n["name"] == f"127.0.0.1:{port}"]
            workers = [n for n in body["nodes"] if n["role"] == "worker" and n["name"] == "worker-main@localhost"]
            return body if apis and workers and apis[0]["load"] > 0 else None

        body = wait_until(listed, 15, "both nodes listed, the API with a request rate", interval=0.3)
        node = next(n for n in body["nodes"] if n["role"] == "api" and n["name"] == f"127.0.0.1:{port}")
        assert set(node) == {"incarnation", "role", "name", "host", "pid", "version", "started", "last_seen", "load"}
        assert node["pid"] > 0 and node["host"] and node["version"]
        assert node["started"] <= node["last_seen"]
        assert body["counts"]["api"] >= 1 and body["counts"]["worker"] >= 1
        assert body["heartbeat_ttl"] == nodes.HEARTBEAT_TTL
        metrics = requests.get(f"{url}/metrics", timeout=5).text
        gauge = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                 if line.startswith("httpqueue_nodes{")}
        assert gauge['httpqueue_nodes{role="api"}'] >= 1 and gauge['httpqueue_nodes{role="worker"}'] >= 1
        incarnation = node["incarnation"]
    finally:
        api.kill9()
    reg = nodes.RedisRegistry(rclient, Keys(settings.key_prefix))
    wait_until(lambda: incarnation not in {n.identity.incarnation for n in reg.live()},
               nodes.HEARTBEAT_TTL + 5, "the killed API process to leave the list")


def test_a_worker_stopped_cleanly_leaves_at_once(env: dict[str, str], settings: Settings,
                                                 rclient: redis.Redis) -> None:
    reg = nodes.RedisRegistry(rclient, Keys(settings.key_prefix))
    proc = start_worker(env, "nodes-leaver", rclient)
    name = "nodes-leaver@localhost"
    try:
        node = wait_until(lambda: next((n for n in reg.live() if n.identity.name == name), None), 15,
                          "the worker in the registry")
        assert node.identity.role is nodes.Role.WORKER and node.identity.pid == proc.pid
    finally:
        proc.stop()
    # gone at once (the clean stop removed it), not a ttl later, and not left for a promoter to release
    assert name not in {n.identity.name for n in reg.live()}
    assert node.identity.incarnation not in reg.departed(nodes.Role.WORKER)


def test_a_workers_load_figure_counts_its_attempts_in_flight(env: dict[str, str], settings: Settings,
                                                            rclient: redis.Redis, topic: str) -> None:
    """Summed over its pool processes (they share their metrics: see tests/unit/test_metrics_dir.py)."""
    held = Receiver().start()
    held.script("/held", *[Answer(delay=20.0) for _ in range(3)])
    proc = start_worker(env, "nodes-busy", rclient)
    try:
        url = f"http://127.0.0.1:{free_port()}"
        api = start_api(env, int(url.rsplit(":", 1)[1]), name="api-nodes-busy")
        try:
            for _ in range(3):
                created = requests.post(f"{url}/v1/tasks", timeout=10, json={
                    "topic": topic, "delay": 0, "timeout": 30, "callback": held.url("/held")})
                assert created.status_code == 201, created.text
        finally:
            api.stop()
        held.wait_for(lambda reqs: len(reqs) >= 3, timeout=20)
        reg = nodes.RedisRegistry(rclient, Keys(settings.key_prefix))

        def busy() -> float | None:  # the session's worker may have taken some of them
            total = sum(n.load for n in reg.live() if n.identity.role is nodes.Role.WORKER)
            return total if total >= 3 else None

        assert wait_until(busy, 8, "the workers' load figures to add up to 3", interval=0.2) == 3
    finally:
        proc.kill9()
        held.stop()
