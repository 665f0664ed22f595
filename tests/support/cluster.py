"""A real Redis Cluster for the suite: 3 masters and 3 replicas of ``redis-server`` on loopback ports.

Started once per session (``redis_cluster`` fixture in ``tests/conftest.py``)
in a temporary folder, joined with ``redis-cli --cluster create``, and ready
when every node reports ``cluster_state:ok`` and agrees on who serves each
slot. The fault tests start their own (they kill and reshard it). Nodes are
persistence-free: a cluster's durability is its replicas, and that is what the
fault tests measure.
"""
from __future__ import annotations

import dataclasses
import random
import shutil
import socket
import subprocess
import time
import typing as t
from pathlib import Path

import redis

from httpqueue.embedded import redis_server_binary

STORE_KINDS = ("standalone", "cluster")
"""The stores a store-facing test can run on (the ``store_kind`` fixture; ``tests/store/conftest.py``)."""

NODE_TIMEOUT_MS = 1500
"""``cluster-node-timeout``: how long a silent master stays a master (its replica then takes over)."""


BUS_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus), so its port must be 55535 or less."""


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int, tries: int = 1000) -> list[int]:
    """``count`` distinct loopback ports whose bus ports (+10000) are free too (a free port may be too high)."""
    ports: list[int] = []
    for _ in range(tries):
        port = random.randrange(20_000, 45_000)
        if port not in ports and port + BUS_OFFSET not in ports and _bindable(port) and _bindable(port + BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError("no free loopback ports for a Redis Cluster")


def have_cluster_tools() -> bool:
    return shutil.which("redis-cli") is not None


@dataclasses.dataclass(frozen=True)
class Node:
    """One line of ``CLUSTER NODES``: a node's id, port, role, its master's id and its slot ranges."""

    id: str
    port: int
    master: bool
    master_id: str
    failed: bool
    slots: tuple[tuple[int, int], ...]

    @property
    def slot_count(self) -> int:
        return sum(b - a + 1 for a, b in self.slots)


def parse_nodes(parsed: t.Mapping[str, t.Mapping[str, t.Any]]) -> list[Node]:
    """``CLUSTER NODES`` (as redis-py parses it) as :class:`Node` objects, by port."""
    nodes = []
    for address, info in parsed.items():
        flags = str(info["flags"]).split(",")
        nodes.append(Node(str(info["node_id"]), int(address.split("@")[0].rsplit(":", 1)[1]), "master" in flags,
                          str(info["master_id"]), "fail" in flags or "fail?" in flags,
                          tuple((int(a), int(b)) for a, b in ([*s, s[0]][:2] for s in info["slots"]))))
    return sorted(nodes, key=lambda n: n.port)


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, in ``folder``, on free loopback ports."""

    def __init__(self, folder: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = NODE_TIMEOUT_MS,
                 ) -> None:
        self.folder = folder
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = cluster_ports(masters * (1 + replicas))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node (any node will do: the client finds the others)."""
        return f"redis://127.0.0.1:{self.alive_ports()[0]}/0"

    def alive_ports(self) -> list[int]:
        return [port for port in self.ports if self.procs[port].poll() is None]

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (not cluster-aware): for ``CLUSTER`` commands and inspection."""
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)

    def _spawn(self, port: int) -> None:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-replica-validity-factor", "0",
             "--appendonly", "no", "--save", "", "--protected-mode", "yes",
             "--logfile", str(folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, timeout: float = 30.0) -> LocalCluster:
        for port in self.ports:
            self._spawn(port)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait_node(port, deadline)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
        self.wait_stable(deadline - time.monotonic())
        self._wait(lambda: len([n for n in self.nodes() if not n.master]) == self.masters * self.replicas, deadline,
                   "every replica known")
        self._wait(self.replicating, deadline, "every replica in sync with its master")
        return self

    def replicating(self) -> bool:
        """Whether every live replica's link to its master is up (so ``WAIT`` can be met)."""
        for node in self.nodes():
            if node.master or node.failed or node.port not in self.alive_ports():
                continue
            client = self.node(node.port)
            try:
                if client.info("replication").get("master_link_status") != "up":
                    return False
            finally:
                client.close()
        return True

    def wait_stable(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and they all agree on the masters, their slots and
        their replicas (every replica of a live master)."""
        deadline = time.monotonic() + timeout
        self._wait(self.stable, deadline, "cluster_state:ok on every node, one view of the slots")

    def stable(self) -> bool:
        views = set()
        for port in self.alive_ports():
            client = self.node(port)
            try:
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
                nodes = parse_nodes(client.execute_command("CLUSTER NODES"))
            finally:
                client.close()
            masters = [n for n in nodes if n.master and n.slots and not n.failed]
            replicas = [n for n in nodes if not n.master and not n.failed]
            live = {n.id for n in masters}
            if sum(n.slot_count for n in masters) != 16384 or any(n.master_id not in live for n in replicas):
                return False
            views.add((tuple(sorted((n.port, n.slots) for n in masters)),
                       tuple(sorted((n.port, n.master_id) for n in replicas))))
        return len(views) == 1

    def nodes(self) -> list[Node]:
        """The cluster as one live node sees it."""
        client = self.node(self.alive_ports()[0])
        try:
            return parse_nodes(client.execute_command("CLUSTER NODES"))
        finally:
            client.close()

    def master_of_slot(self, slot: int) -> Node:
        [found] = [n for n in self.nodes() if n.master and not n.failed and any(a <= slot <= b for a, b in n.slots)]
        return found

    def replica_of(self, master: Node) -> Node:
        return next(n for n in self.nodes() if n.master_id == master.id and not n.failed)

    def begin_move(self, slot: int, source: Node, target: Node) -> None:
        """Mark ``slot`` IMPORTING on ``target`` and MIGRATING on ``source`` (``redis-cli --cluster reshard``'s
        first step): from now on keys of the slot may be on either side."""
        self._on(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
        self._on(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)

    def move_keys(self, source: Node, target: Node, keys: t.Sequence[str]) -> None:
        self._on(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)

    def finish_move(self, slot: int, source: Node, target: Node) -> None:
        """Give ``slot`` to ``target`` on both sides, then on the other masters (saving them a redirect)."""
        self._on(target, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        self._on(source, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        for node in self.nodes():
            if node.master and not node.failed and node.id not in (source.id, target.id):
                try:
                    self._on(node, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
                except redis.ResponseError:  # no longer a master in its own view: the bus tells it anyway
                    pass

    def move_slot(self, slot: int, source: Node, target: Node, batch: int = 10,
                  halfway: t.Callable[[], None] = lambda: None) -> int:
        """Move one slot as ``redis-cli --cluster reshard`` does, ``batch`` keys per MIGRATE. ``halfway()``
        runs after the first batch: the slot stays half moved meanwhile (as a big slot does), so scripts
        meet its keys on both sides. Returns the number of keys moved."""
        self.begin_move(slot, source, target)
        moved = 0
        for _ in range(100_000):
            keys = self._on(source, "CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            self.move_keys(source, target, keys)
            if not moved:
                halfway()
            moved += len(keys)
        self.finish_move(slot, source, target)
        return moved

    def _on(self, node: Node, *command: t.Any) -> t.Any:
        client = self.node(node.port)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def kill(self, port: int) -> None:
        """SIGKILL one node (no goodbye to the others: they notice after ``cluster-node-timeout``)."""
        self.procs[port].kill()
        self.procs[port].wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins with its ``nodes.conf`` (as a replica if it was replaced)."""
        self._spawn(port)
        self._wait_node(port, time.monotonic() + 15)

    def _wait_node(self, port: int, deadline: float) -> None:
        def answers() -> bool:
            if self.procs[port].poll() is not None:
                log = self.folder / str(port) / "redis.log"
                raise RuntimeError(f"redis-server {port} exited: {log.read_text()[-500:] if log.exists() else ''}")
            client = self.node(port)
            try:
                return bool(client.ping())
            finally:
                client.close()
        self._wait(answers, deadline, f"node {port} answers")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    @staticmethod
    def _wait(check: t.Callable[[], t.Any], deadline: float, what: str) -> None:
        while True:
            try:
                if check():
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster: no {what}")
            time.sleep(0.05)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
