"""Where prometheus_client's multiprocess files go: chosen before prometheus_client is imported.

prometheus_client picks its value store when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``; so the CLI calls :func:`prepare_multiprocess_dir`
first thing, and this module must not import prometheus_client itself.
"""
from __future__ import annotations

import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(path: str = "") -> str:
    """Point prometheus_client at ``path`` (or a fresh temporary directory) for this process and its children.

    An existing variable wins: gunicorn's workers and ``httpqueue run``'s
    children inherit their parent's directory.
    """
    if os.environ.get(ENV):
        return os.environ[ENV]
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="httpqueue-metrics-")
    os.environ[ENV] = path
    return path
