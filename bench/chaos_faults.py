"""The chaos soak's processes and its faults: kill -9 and restart of nodes, and Sentinel master failovers.

:class:`Nodes` is 3 API nodes and 3 workers of one fault-suite
:class:`~tests.support.faults.Service`, behind a real nginx
(:class:`~tests.support.nginx.Nginx`, ``docker/nginx.conf``). :class:`Killer`
SIGKILLs a random one of them (its whole process group) every few seconds and
starts it again on the same port or under the same name (a new incarnation)
after a short pause. :class:`Failovers` kills the Redis master of the Sentinel
setup of ``tests/support/sentinel.py`` and, once the sentinels have
promoted its replica, starts it again as the new master's replica. Every fault
is recorded (:class:`Fault`): the final count explains each duplicate delivery
by a fault shortly before it.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import random
import shutil
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import psutil
import redis
import requests

from httpqueue.embedded import free_port
from tests.support.faults import Service
from tests.support.nginx import Nginx
from tests.support.processes import Proc, start_api, wait_until

if t.TYPE_CHECKING:
    from tests.support.sentinel import SentinelGroup

PAUSE = (0.5, 3.0)
"""Seconds a killed node stays down before it is started again."""

RESTART_TRIES = 3
"""Starts tried before a node that will not come back stops the run."""


@dataclasses.dataclass
class Fault:
    at: float  # epoch seconds of the kill
    kind: str  # "api", "worker" or "failover"
    target: str
    back_s: float | None = None  # kill to serving again (the restarted node answers / is registered)


class Nodes:
    """API nodes on fixed loopback ports and named workers, all of ``service``, nginx in front."""

    def __init__(self, service: Service, folder: Path, prefix: str, count: int = 3,
                 redis_client: redis.Redis | None = None) -> None:
        self.service = service
        self.prefix = prefix
        self.redis_client = redis_client
        self.ports = {f"{prefix}-api-{i}": free_port() for i in range(count)}
        self.worker_names = [f"{prefix}-worker-{i}" for i in range(count)]
        self.procs: dict[str, Proc] = {}
        self.nginx = Nginx(folder / "nginx", list(self.ports.values()))

    @property
    def url(self) -> str:
        return self.nginx.url

    @property
    def names(self) -> list[str]:
        return [*self.ports, *self.worker_names]

    def start(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(len(self.names)) as pool:
            for future in [pool.submit(self.start_one, name) for name in self.names]:
                future.result()
        self.nginx.start()

    def start_one(self, name: str) -> Proc:
        if name in self.ports:
            proc = start_api(self.service.env, self.ports[name], name=name, workers=1, timeout=60)
        else:
            proc = self.service.start_worker(name, client=self.redis_client)
        self.procs[name] = proc
        return proc

    def registered(self, name: str) -> bool:
        """Whether the node registry lists this process or a child of it (an API node's granian worker).

        A restarted worker's name is listed until its dead incarnation's heartbeat runs out: only the pid
        tells the new incarnation.
        """
        parent = psutil.Process(self.procs[name].pid)
        pids = {parent.pid, *(p.pid for p in parent.children(recursive=True))}
        listed = requests.get(f"{self.url}/v1/nodes", timeout=5).json()["nodes"]
        return any(node["pid"] in pids for node in listed)

    def dump_stacks(self, out: Path) -> None:
        """``py-spy dump`` of every worker process and its pool processes into ``out``.

        A pool process that launches callbacks but records none of their results (the soak has seen one)
        shows where its recording threads wait.
        """
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        with open(out, "w") as dump:
            for name in self.worker_names:
                parent = psutil.Process(self.procs[name].pid)
                for process in [parent, *parent.children(recursive=True)]:
                    done = subprocess.run([py_spy, "dump", "--pid", str(process.pid)], capture_output=True,
                                          text=True, timeout=60)
                    dump.write(f"== {name} pid {process.pid}\n{done.stdout}{done.stderr}\n")

    def stop(self) -> None:
        self.nginx.stop()
        for proc in self.procs.values():
            proc.stop()


class Killer:
    """Every ``every`` seconds (uniformly drawn), kill -9 a random node of ``nodes`` and start it again."""

    def __init__(self, nodes: Nodes, every: tuple[float, float], faults: list[Fault]) -> None:
        self.nodes = nodes
        self.every = every
        self.faults = faults
        self.errors: list[str] = []

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(random.uniform(*self.every)):
            self.kill_and_restart(random.choice(self.nodes.names))

    def kill_and_restart(self, name: str) -> None:
        fault = Fault(time.time(), "api" if name in self.nodes.ports else "worker", name)
        self.faults.append(fault)
        self.nodes.procs[name].kill9()
        time.sleep(random.uniform(*PAUSE))
        for attempt in range(RESTART_TRIES):
            try:
                self.nodes.start_one(name)
                # start_worker may see the dead incarnation's heartbeat: wait for the new one in the registry
                wait_until(lambda: self.nodes.registered(name), 60, f"{name} registered", interval=0.2)
                fault.back_s = round(time.time() - fault.at, 2)
                return
            except Exception as exc:  # a loaded box: try again, and say so in the summary
                self.errors.append(f"{name} restart {attempt + 1}: {str(exc)[:300]}")
                proc = self.nodes.procs.get(name)
                if proc is not None and proc.alive():
                    proc.kill9()
        raise RuntimeError(f"{name} did not come back after {RESTART_TRIES} starts: {self.errors[-1]}")


class Failovers:
    """``count`` kill -9s of the Sentinel setup's master, spread over ``seconds``."""

    def __init__(self, cluster: SentinelGroup, master: str, count: int, seconds: float,
                 faults: list[Fault]) -> None:
        self.cluster = cluster
        self.master = master
        self.count = count
        self.seconds = seconds
        self.faults = faults
        self.errors: list[str] = []

    def run(self, stop: threading.Event) -> None:
        start = time.monotonic()
        for k in range(1, self.count + 1):
            if stop.wait(max(0.0, start + k * self.seconds / (self.count + 1) - time.monotonic())):
                return
            try:
                self.fail_over()
            except Exception as exc:  # reported; the soak goes on with whatever master there is
                self.errors.append(f"failover {k}: {str(exc)[:300]}")

    def sentinels(self) -> list[redis.Redis]:
        return [redis.Redis(port=port, socket_timeout=2) for port in self.cluster.sentinels]

    def master_port(self) -> int:
        return self.cluster.current_master_port()

    def fail_over(self) -> None:
        """Kill the master; once promoted, start the old master again as the new one's replica (same port)."""
        old_port = self.master_port()
        name = next(n for n, port in self.cluster.ports.items() if port == old_port)
        fault = Fault(time.time(), "failover", f"{name}:{old_port}")
        self.faults.append(fault)
        self.cluster.procs[name].kill()  # SIGKILL: no goodbye to replica or sentinels
        self.cluster.procs[name].wait(timeout=10)
        wait_until(lambda: all(self._master_port_of(s) != old_port for s in self.sentinels()), 60,
                   "sentinels promote the replica", interval=0.1)
        fault.back_s = round(time.time() - fault.at, 2)
        new_port = self.master_port()
        self.cluster._redis(name, "--replicaof", "127.0.0.1", str(new_port))
        again = self.cluster.client(name)
        wait_until(lambda: again.info("replication").get("master_link_status") == "up", 30, "replica linked")
        # the next failover needs every sentinel to see this replica as healthy (from the master's INFO)
        wait_until(lambda: all(self._healthy_replica(s, old_port) for s in self.sentinels()), 40,
                   "sentinels know the new replica", interval=0.5)

    def _master_port_of(self, sentinel: redis.Redis) -> int:
        address = t.cast(tuple[str, int], sentinel.sentinel_get_master_addr_by_name(self.master))
        return int(address[1])

    def _healthy_replica(self, sentinel: redis.Redis, port: int) -> bool:
        return any(int(r["port"]) == port and "s_down" not in r["flags"] and "disconnected" not in r["flags"]
                   for r in sentinel.sentinel_slaves(self.master))
