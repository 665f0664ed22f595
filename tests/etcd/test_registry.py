"""The node registry on etcd leases: the same behaviour as the Redis one (``tests/integration/test_nodes.py``)."""
from __future__ import annotations

from httpqueue.etcd.keys import EtcdKeys
from httpqueue.etcd.registry import EtcdRegistry
from httpqueue.nodes import Heartbeat, Role, new_identity
from tests.support.etcd import EtcdNodes
from tests.support.processes import wait_until


def registry(etcd: EtcdNodes) -> EtcdRegistry:
    return EtcdRegistry(etcd.client(), EtcdKeys(etcd.etcd_prefix))


def test_a_beat_lists_the_node_until_its_lease_runs_out(nodes: EtcdNodes) -> None:
    reg = registry(nodes)
    worker, api = new_identity(Role.WORKER, "w1@here"), new_identity(Role.API, "127.0.0.1:9")
    reg.beat(worker, 3, ttl=1)
    reg.beat(api, 12.5, ttl=30)
    listed = reg.live()
    assert [n.identity for n in listed] == [api, worker]  # API processes first
    assert (listed[0].load, listed[1].load) == (12.5, 3)
    assert reg.counts() == {Role.API: 1, Role.WORKER: 1}
    assert reg.departed(Role.WORKER) == []
    wait_until(lambda: reg.departed(Role.WORKER) == [worker.incarnation], 5, "the worker's lease to run out")
    assert [n.identity for n in reg.live()] == [api]
    reg.remove(Role.WORKER, worker.incarnation)
    assert reg.departed(Role.WORKER) == []
    reg.leave(api)
    assert reg.live() == []


def test_beats_keep_the_lease_and_a_restart_is_a_new_incarnation(nodes: EtcdNodes) -> None:
    reg = registry(nodes)
    first, second = new_identity(Role.WORKER, "same@host"), new_identity(Role.WORKER, "same@host")
    beat = Heartbeat(reg, second, interval=0.3, ttl=1).start()
    try:
        reg.beat(first, 0, ttl=1)
        wait_until(lambda: reg.departed(Role.WORKER) == [first.incarnation], 5, "the first incarnation's death")
        assert [n.identity.incarnation for n in reg.live()] == [second.incarnation]  # kept alive by its beats
    finally:
        beat.stop()
    assert reg.live() == []  # a clean stop leaves at once
