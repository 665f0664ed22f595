"""A real Redis Sentinel setup on loopback: one master, one replica, three sentinels.

Debian's ``redis-server`` and ``redis-sentinel`` on free loopback ports, in a
temporary folder. The service reaches it through ``sentinel://`` URLs (:attr:`SentinelGroup.url`)
for the store (redis-py's Sentinel) and, when no other broker is named, the
Celery broker (kombu's sentinel transport), with ``sentinel_master`` set to
:data:`MASTER`.

The fault suite (``tests/faults/test_sentinel.py``) starts one per test (it
kills the master); the combinations test uses the session's (the
``redis_sentinel`` fixture in ``tests/conftest.py``), which never fails over.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from httpqueue.embedded import free_port
from tests.support.processes import wait_until

MASTER = "hqmaster"
"""The monitored master's name (the service's ``sentinel_master``)."""


def have_sentinel_tools() -> bool:
    return bool(shutil.which("redis-sentinel") and shutil.which("redis-server"))


class SentinelGroup:
    """A master, a replica and three sentinels in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {"master": free_port(), "replica": free_port()}
        self.sentinels = [free_port() for _ in range(3)]

    def _redis(self, name: str, *extra: str) -> None:
        folder = self.tmp / name
        folder.mkdir(exist_ok=True)
        self.procs[name] = subprocess.Popen(
            ["redis-server", "--port", str(self.ports[name]), "--bind", "127.0.0.1", "--dir", str(folder),
             "--appendonly", "yes", "--save", "", *extra], stdout=subprocess.DEVNULL)

    def start(self, failover_ready: bool = True) -> SentinelGroup:
        """Start everything; with ``failover_ready``, also wait until the sentinels could fail over
        (they know each other and the replica: up to ~10 s more, the master's INFO period)."""
        self._redis("master")
        self._redis("replica", "--replicaof", "127.0.0.1", str(self.ports["master"]))
        for i, port in enumerate(self.sentinels):
            conf = self.tmp / f"sentinel{i}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\nsentinel resolve-hostnames no\n"
                            f"sentinel monitor {MASTER} 127.0.0.1 {self.ports['master']} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} 1000\n"
                            f"sentinel failover-timeout {MASTER} 5000\n")
            self.procs[f"sentinel{i}"] = subprocess.Popen(["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL)
        replica = self.client("replica")
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 15, "replica linked")
        sentinels = [redis.Redis(port=port) for port in self.sentinels]
        wait_until(lambda: all(s.sentinel_get_master_addr_by_name(MASTER) for s in sentinels), 15,
                   "every sentinel names the master")
        if failover_ready:
            # a sentinel learns of replicas from the master's INFO (every 10 s): until each one lists the
            # replica, a failover has no candidate and is retried only after 2 x failover-timeout
            wait_until(lambda: all(s.sentinel_master(MASTER).get("num-other-sentinels") == 2 for s in sentinels),
                       15, "sentinels met")
            wait_until(lambda: all(s.sentinel_master(MASTER).get("num-slaves") == 1 for s in sentinels),
                       25, "sentinels know the replica")
        return self

    @property
    def url(self) -> str:
        """The ``sentinel://`` URL of the three sentinels (the store's and, by default, the broker's)."""
        return ";".join(f"sentinel://127.0.0.1:{port}" for port in self.sentinels)

    def client(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], socket_timeout=2)

    def current_master_port(self) -> int:
        return int(redis.Redis(port=self.sentinels[1]).sentinel_get_master_addr_by_name(MASTER)[1])

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)
