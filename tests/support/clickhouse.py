"""A real ClickHouse server for tests: Debian's ``clickhouse-server`` on free loopback ports.

Its config lives under a temporary directory (data, logs, tmp), it listens on
127.0.0.1 only, and :meth:`LocalClickHouse.start` returns once the native port
answers a query. :meth:`stop` and :meth:`start` again keep the data, so a test
can take the server away mid-export and bring it back.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
import typing as t
from pathlib import Path

from httpqueue.embedded import free_port

SERVER = "clickhouse-server"
SERVER_PATHS = ("/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")

CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root}/log/server.log</log><errorlog>{root}/log/error.log</errorlog>
    <console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp}</tcp_port>
  <http_port>{http}</http_port>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  <max_concurrent_queries>20</max_concurrent_queries>
</yandex>
"""

USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>1000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"""


def server_binary() -> str | None:
    """Path of clickhouse-server, or None when it is not installed (``.ci/run`` installs it)."""
    found = shutil.which(SERVER)
    return found or next((p for p in SERVER_PATHS if Path(p).exists()), None)


class LocalClickHouse:
    """One clickhouse-server process with its own directory and ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tcp_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        for sub in ("data", "tmp", "log", "user_files", "format_schemas"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "config.xml").write_text(CONFIG.format(root=root, tcp=self.tcp_port, http=self.http_port))
        (root / "users.xml").write_text(USERS)

    @property
    def url(self) -> str:
        """The sink URL of the default database."""
        return f"clickhouse://127.0.0.1:{self.tcp_port}/default"

    def start(self, timeout: float = 30.0) -> LocalClickHouse:
        binary = server_binary()
        assert binary, "clickhouse-server is not installed"
        log = open(self.root / "log" / "stdout.log", "ab")
        self.process = subprocess.Popen([binary, f"--config-file={self.root / 'config.xml'}"], cwd=self.root,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                errors = (self.root / "log" / "error.log")
                raise RuntimeError(f"clickhouse-server did not start: {errors.read_text()[-2000:] if errors.exists() else ''}")
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        from clickhouse_driver import Client

        client = Client("127.0.0.1", port=self.tcp_port, connect_timeout=1, send_receive_timeout=5)
        try:
            return bool(client.execute("SELECT 1") == [(1,)])
        except Exception:
            return False
        finally:
            client.disconnect()

    def query(self, sql: str, params: t.Any = None) -> list[tuple[t.Any, ...]]:
        from clickhouse_driver import Client

        client = Client("127.0.0.1", port=self.tcp_port)
        try:
            return t.cast(list[tuple[t.Any, ...]], client.execute(sql, params))
        finally:
            client.disconnect()

    def stop(self, grace: float = 2.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``grace`` seconds (18.16 takes about 10 s to stop
        cleanly). Inserted parts are on disk once an INSERT returns, so the data stays for :meth:`start`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
