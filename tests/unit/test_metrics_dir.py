"""The multiprocess metrics directory is chosen before anything imports prometheus_client.

prometheus_client picks its value store (per process, or files in
``PROMETHEUS_MULTIPROC_DIR``) once, when it is first imported; the CLI points
it at a directory in ``_install``. If importing the CLI already imported
prometheus_client, every process keeps its metrics to itself: ``/metrics``
shows one API process's counters, and a worker's load figure in the node
registry (attempts in flight in its pool processes) reads 0.
"""
from __future__ import annotations

import os
import subprocess
import sys
import typing as t

from httpqueue.metrics_dir import ENV


def test_importing_the_command_line_does_not_import_prometheus_client() -> None:
    probe = ("import sys, httpqueue.cli; "
             "print(sorted(m for m in sys.modules if m.startswith('prometheus_client'))[:1])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    imported = out.stdout.strip()
    assert imported == "[]", (
        f"importing httpqueue.cli imported {imported}: a module it imports must import prometheus_client "
        "lazily (python -X importtime -c 'import httpqueue.cli' shows which)")


def test_attempts_in_flight_sums_live_processes_and_forgets_dead_ones(tmp_path: t.Any) -> None:
    """Each pool process keeps its own count in the shared directory; a process killed mid-count is dropped."""
    env = {**os.environ, ENV: str(tmp_path)}
    count = "import sys; from httpqueue import metrics; metrics.IN_FLIGHT.inc(int(sys.argv[1])); {}"
    dead = subprocess.run([sys.executable, "-c", count.format(""), "5"], env=env, timeout=60)  # exits: pid gone
    assert dead.returncode == 0
    alive = subprocess.Popen([sys.executable, "-c", count.format("print('ok', flush=True); sys.stdin.read()"), "3"],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert alive.stdout is not None and alive.stdout.readline().strip() == "ok"
        read = subprocess.run([sys.executable, "-c", "from httpqueue import metrics; "
                               "print(metrics.attempts_in_flight())"], env=env, capture_output=True, text=True,
                              timeout=60)
        assert read.stdout.strip() == "3.0", read.stderr
    finally:
        alive.communicate("", timeout=30)
