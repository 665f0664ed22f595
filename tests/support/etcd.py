"""A real 3-member etcd cluster for the etcd tests: Debian's ``etcd`` on free loopback ports.

Each member has its own client and peer port on 127.0.0.1 and its own data
directory under the test's temporary folder. Elections are tuned short
(50 ms heartbeats, 500 ms election timeout) so a killed leader is replaced
in about a second, as on a healthy LAN. :meth:`LocalEtcd.kill` sends SIGKILL
(no clean shutdown, as a crash), :meth:`LocalEtcd.restart` starts the member
again on its own data, which rejoins the cluster.
"""
from __future__ import annotations

import dataclasses
import shutil
import signal
import subprocess
import time
import typing as t
from pathlib import Path

import httpx

from httpqueue.embedded import free_port

ETCD = "etcd"
START_TIMEOUT = 30.0


def have_etcd() -> bool:
    return shutil.which(ETCD) is not None


@dataclasses.dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def healthy(self) -> bool:
        try:
            return bool(httpx.get(f"{self.client_url}/health", timeout=1.0).json().get("health") == "true")
        except (httpx.HTTPError, ValueError):
            return False


class LocalEtcd:
    """Three etcd members forming one cluster, started and stopped by the test suite."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.members = [Member(f"m{i}", free_port(), free_port(), root / f"m{i}") for i in range(size)]

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _command(self, m: Member) -> list[str]:
        cluster = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [ETCD, "--name", m.name, "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"httpqueue-{self.root.name}",
                "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error"]

    def _spawn(self, m: Member) -> None:
        log = open(self.root / f"{m.name}.log", "ab")
        m.process = subprocess.Popen(self._command(m), stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self) -> LocalEtcd:
        for m in self.members:
            self._spawn(m)
        self.wait_healthy()
        return self

    def wait_healthy(self, members: t.Sequence[Member] | None = None, timeout: float = START_TIMEOUT) -> None:
        """Until every member in ``members`` (default: all running ones) answers healthy (it has a leader)."""
        waiting = list(members or [m for m in self.members if m.process is not None])
        deadline = time.monotonic() + timeout
        while waiting:
            waiting = [m for m in waiting if not m.healthy()]
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"etcd members {[m.name for m in waiting]} not healthy; logs in {self.root}")
            if waiting:
                time.sleep(0.1)

    def kill(self, index: int) -> None:
        """SIGKILL one member (a crash: nothing flushed, no goodbye to the others)."""
        m = self.members[index]
        if m.process is not None:
            m.process.send_signal(signal.SIGKILL)
            m.process.wait()
            m.process = None

    def kill_all(self) -> None:
        for i in range(len(self.members)):
            self.kill(i)

    def restart(self, index: int, wait: bool = True) -> None:
        """Start a killed member again on its own data directory."""
        m = self.members[index]
        if m.process is None:
            self._spawn(m)
        if wait:
            self.wait_healthy([m])

    def restart_all(self) -> None:
        for i in range(len(self.members)):
            self.restart(i, wait=False)
        self.wait_healthy()

    def stop(self) -> None:
        for m in self.members:
            if m.process is not None:
                m.process.terminate()
        for m in self.members:
            if m.process is not None:
                try:
                    m.process.wait(10)
                except subprocess.TimeoutExpired:
                    m.process.kill()
                    m.process.wait()
                m.process = None


class EtcdNodes:
    """httpqueue nodes of one test on the suite's Redis and a :class:`LocalEtcd`: they share an etcd prefix.

    Each node is a :class:`~httpqueue.context.Context` (or a Flask app around
    one), built as a process builds its own, so each has its own settings watch.
    A node may get a Redis key prefix of its own: then whatever it holds of
    the settings in Redis came through its own watch, not another node's copy.
    Everything is stopped and its keys deleted when the test ends.
    """

    def __init__(self, etcd: LocalEtcd, redis_url: str) -> None:
        from tests.support.store import fresh_prefix

        self.etcd = etcd
        self.redis_url = redis_url
        self.key_prefix = fresh_prefix()
        self.etcd_prefix = f"/{self.key_prefix}/"
        self.contexts: list[t.Any] = []

    def overrides(self, **extra: t.Any) -> dict[str, t.Any]:
        from tests.support.settings import TEST_SETTINGS

        return {**TEST_SETTINGS, "redis_url": self.redis_url, "key_prefix": self.key_prefix,
                "etcd_endpoints": tuple(self.etcd.endpoints), "etcd_prefix": self.etcd_prefix,
                "etcd_timeout": 1.0, **extra}

    def context(self, **extra: t.Any) -> t.Any:
        from httpqueue.config import Settings
        from httpqueue.context import Context

        ctx = Context(Settings.load(self.overrides(**extra), environ={}))
        self.contexts.append(ctx)
        return ctx

    def app(self, **extra: t.Any) -> t.Any:
        from httpqueue.api import create_app
        from httpqueue.api.base import CONTEXT_KEY
        from httpqueue.config import Settings

        app = create_app(Settings.load(self.overrides(**extra), environ={}))
        self.contexts.append(app.extensions[CONTEXT_KEY])
        return app

    def client(self) -> t.Any:
        from httpqueue.etcd.client import EtcdClient

        return EtcdClient(self.etcd.endpoints, timeout=1.0)

    def close(self) -> None:
        from tests.support.store import drop_prefix

        for ctx in self.contexts:
            if ctx.cluster is not None:
                ctx.cluster.stop()
            drop_prefix(ctx.store.redis, ctx.keys)
        if all(m.process is not None for m in self.etcd.members):
            self.client().delete_prefix(self.etcd_prefix)
