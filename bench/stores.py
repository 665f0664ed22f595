"""The Redis a scale run fills: a standalone ``redis-server``, or a Redis Cluster on one box.

Both are started here on free loopback ports in a temporary directory, with
persistence off and a ``maxmemory`` cap with ``noeviction`` (a run that
outgrows the box gets refused writes instead of taking the machine's memory
from its neighbours). A :class:`StoreTarget` gives what the curve needs
whatever the topology: the URL the store and the worker are pointed at, one
client per master (``INFO``, ``MEMORY STATS``, ``commandstats`` are per node and
are summed), and a key-routed client for ``MEMORY USAGE`` of a given key.

The cluster is the test suite's (``tests/support/cluster.py``), 3 masters;
memory is summed over the masters (a replica would hold a copy of its
master's bytes, not more data).
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import typing as t
from pathlib import Path

import psutil
import redis

from httpqueue.embedded import EmbeddedRedis, free_port

MAXMEMORY_SHARE = 0.6
"""Share of the machine's available memory a bench Redis may use in all (then writes are refused)."""

STORE_KINDS = ("standalone", "cluster")


def maxmemory(nodes: int = 1) -> int:
    """Bytes each of ``nodes`` masters may hold: a share of what is available now, split between them."""
    return int(psutil.virtual_memory().available * MAXMEMORY_SHARE / nodes)


class StoreTarget(t.Protocol):
    """What a scale run needs from the Redis it fills."""

    kind: str
    workdir: Path
    redis_url: str
    broker_url: str

    def masters(self) -> list[redis.Redis]:
        """One client per master, for the per-node figures that are summed."""

    def routed(self) -> t.Any:
        """A client that sends a key's command to the node holding it."""

    def pids(self) -> list[int]:
        """The redis-server processes (for their RSS)."""

    def stop(self) -> None:
        """Stop every server this target started."""


class Standalone:
    """One ``redis-server`` on a free loopback port; the store and the broker share it (as in production)."""

    kind = "standalone"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = EmbeddedRedis(workdir / "redis", port=free_port(), appendonly=False).start()
        self.redis_url = self.server.url
        self.broker_url = self.server.url
        self._client = redis.Redis(host="127.0.0.1", port=self.server.port, decode_responses=True)
        self._client.config_set("maxmemory", maxmemory())
        self._client.config_set("maxmemory-policy", "noeviction")

    def masters(self) -> list[redis.Redis]:
        return [self._client]

    def routed(self) -> redis.Redis:
        return self._client

    def pids(self) -> list[int]:
        return [self.server.process.pid] if self.server.process else []

    def stop(self) -> None:
        self.server.stop()


class Cluster:
    """A 3-master Redis Cluster (the test suite's :class:`tests.support.cluster.LocalCluster`), and a
    standalone Redis as broker (kombu has no cluster transport).

    Without replicas by default, like the standalone Redis it is compared
    with: the comparison is then the cost of cluster mode itself (slot
    bookkeeping per key, a client that routes by slot, scripts grouped per
    node), not of replication.
    """

    kind = "cluster"

    def __init__(self, workdir: Path, replicas: int = 0) -> None:
        from tests.support.cluster import LocalCluster

        self.workdir = workdir
        self._cluster = LocalCluster(workdir / "cluster", masters=3, replicas=replicas)
        self._broker: EmbeddedRedis | None = None
        try:
            self._cluster.start()
            self._broker = EmbeddedRedis(workdir / "broker", port=free_port(), appendonly=False).start()
        except BaseException:
            self.stop()
            raise
        self.broker_url = self._broker.url
        self.redis_url = self._cluster.url
        ports = [node.port for node in self._cluster.nodes() if node.master]
        self._masters = [redis.Redis(host="127.0.0.1", port=p, decode_responses=True) for p in ports]
        for client in self._masters:
            client.config_set("maxmemory", maxmemory(len(ports) * (1 + replicas)))
            client.config_set("maxmemory-policy", "noeviction")
        self._routed = redis.RedisCluster(host="127.0.0.1", port=ports[0], decode_responses=True)

    def masters(self) -> list[redis.Redis]:
        return self._masters

    def routed(self) -> redis.RedisCluster:
        return self._routed

    def pids(self) -> list[int]:
        return [int(c.info("server")["process_id"]) for c in self._masters]

    def stop(self) -> None:
        with contextlib.suppress(AttributeError):
            self._routed.close()
        try:
            self._cluster.stop()
        finally:
            if self._broker is not None:
                self._broker.stop()


@contextlib.contextmanager
def started(kind: str) -> t.Iterator[StoreTarget]:
    """A fresh target of ``kind`` in a temporary directory, stopped and removed on the way out (errors too)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"httpqueue-scale-{kind}-"))
    target: StoreTarget | None = None
    try:
        target = Standalone(workdir) if kind == "standalone" else Cluster(workdir)
        yield target
    finally:
        if target is not None:
            target.stop()
        shutil.rmtree(workdir, ignore_errors=True)
