"""A prefork child must never inherit a lock that a worker thread held at the fork.

Celery's prefork pool forks while the worker's own threads (promoter,
scheduler) run. Two such locks hung children in the past: functools.cached_property's
per-class lock (Python 3.11) on the context, and prometheus_client's
multiprocess lock. These tests fork while another thread holds the lock in
question and check that the child gets through.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

from httpqueue import context


def test_the_context_has_no_cached_properties() -> None:
    """Context parts are built in ``__init__``: a cached_property's lock is shared by every instance."""
    import functools

    lazy = [name for name, value in inspect.getmembers(context.Context) if isinstance(value, functools.cached_property)]
    assert lazy == []


def test_a_child_forked_while_a_thread_counts_a_metric_can_count_too(tmp_path: object) -> None:
    """The forking thread takes prometheus_client's multiprocess lock first, so the child never inherits it held."""
    script = textwrap.dedent("""
        import os, sys, threading, time
        from httpqueue import metrics
        from prometheus_client import values
        [lock] = [c.cell_contents for c in values.ValueClass.inc.__closure__
                  if isinstance(c.cell_contents, type(threading.Lock()))]
        held = threading.Event()
        def hold():
            with lock:
                held.set()
                time.sleep(0.3)
        threading.Thread(target=hold).start()
        held.wait()
        pid = os.fork()  # while the other thread holds the lock
        if pid == 0:
            metrics.PROMOTED.inc()
            os._exit(0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                sys.exit(os.waitstatus_to_exitcode(status))
            time.sleep(0.02)
        os.kill(pid, 9)
        sys.exit("the child hung on the metrics lock")
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
