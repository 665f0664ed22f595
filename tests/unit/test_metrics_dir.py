"""The multiprocess metrics directory is chosen before anything imports prometheus_client.

prometheus_client picks its value store (per process, or files in
``PROMETHEUS_MULTIPROC_DIR``) once, when it is first imported; the CLI points
it at a directory in ``_install``. If importing the CLI already imported
prometheus_client, every process keeps its metrics to itself: ``/metrics``
shows one API process's counters, and a worker's load figure in the node
registry (attempts in flight in its pool processes) reads 0.
"""
from __future__ import annotations

import subprocess
import sys


def test_importing_the_command_line_does_not_import_prometheus_client() -> None:
    probe = ("import sys, httpqueue.cli; "
             "print(sorted(m for m in sys.modules if m.startswith('prometheus_client'))[:1])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    imported = out.stdout.strip()
    assert imported == "[]", (
        f"importing httpqueue.cli imported {imported}: a module it imports must import prometheus_client "
        "lazily (python -X importtime -c 'import httpqueue.cli' shows which)")
