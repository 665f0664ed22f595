"""A real nginx (Debian's ``nginx-light``) in front of API nodes, run from ``docker/nginx.conf``.

The shipped file is used as it is, except the lines marked ``# test:`` (the
upstream servers and the listen address), plus what a process of the test's
own needs: a pid file, an error log and temporary directories under the test's
directory, so it runs next to any system nginx and without root.
"""
from __future__ import annotations

import re
import socket
import shutil
import subprocess
import typing as t
from pathlib import Path

from httpqueue.embedded import free_port
from tests.support.processes import ARTIFACTS, wait_until

CONFIG = Path(__file__).resolve().parents[2] / "docker" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def loopback_config(upstreams: t.Sequence[int], port: int, folder: Path, options: str | None = None) -> str:
    """``docker/nginx.conf`` for loopback: ``upstreams`` as the API nodes, listening on ``port``.

    ``options`` replaces the shipped ``server`` parameters (``max_fails=0``: never take a node out).
    """
    text = CONFIG.read_text()
    shipped = re.search(r"server api:2356( [^;]*);", text)
    params = options if options is not None else (shipped.group(1).strip() if shipped else "")
    servers = "\n".join(f"        server 127.0.0.1:{p} {params};" for p in upstreams)
    text, n = re.subn(r"^ *server [^\n]*# test: upstream servers$", servers, text, flags=re.M)
    assert n == 1, "docker/nginx.conf lost its '# test: upstream servers' line"
    text, n = re.subn(r"^ *listen [^\n]*# test: listen$", f"        listen 127.0.0.1:{port};", text, flags=re.M)
    assert n == 1, "docker/nginx.conf lost its '# test: listen' line"
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    paths = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in
                      ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {\n", f"http {{\n{paths}\n", 1)
    return f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} warn;\ndaemon off;\n{text}"


class Nginx:
    """nginx proxying ``127.0.0.1:<port>`` to API nodes on loopback ``upstreams``."""

    def __init__(self, folder: Path, upstreams: t.Sequence[int], options: str | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = folder / "nginx.conf"
        self.conf.write_text(loopback_config(upstreams, self.port, folder, options))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> Nginx:
        check = subprocess.run([NGINX, "-t", "-q", "-p", str(self.folder), "-e", str(self.folder / "error.log"),
                                "-c", str(self.conf)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t refused the configuration:\n{check.stderr}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.process = subprocess.Popen([NGINX, "-p", str(self.folder), "-e", str(self.folder / "error.log"),
                                         "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=open(ARTIFACTS / "nginx.log", "ab"), start_new_session=True)
        wait_until(lambda: self.process is not None and (self.process.poll() is not None or self.listening()),
                   timeout, "nginx listening")
        assert self.process.poll() is None, (self.folder / "error.log").read_text()
        return self

    def upstream_errors(self) -> int:
        """Lines of the error log about a node that refused, reset or timed out (nginx then tries the next)."""
        log = self.folder / "error.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return sum(1 for line in text.splitlines() if "upstream" in line and "[error]" in line)

    def listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        error_log = self.folder / "error.log"
        if error_log.exists():
            shutil.copy(error_log, ARTIFACTS / "nginx-error.log")
