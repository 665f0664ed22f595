"""A prefork child must never inherit a lock that a worker thread held at the fork.

Celery's prefork pool forks while the worker's own threads (promoter,
scheduler) run. Locks that hung children: functools.cached_property's
per-class lock (Python 3.11) on the context, prometheus_client's
multiprocess lock, and redis-py's connection pool lock (a child closing the
kombu channels its parent's promoter published on); kombu's cached
properties and Celery's signals have per-class locks the promoter takes too.
These tests fork while another thread holds the lock in question and check
that the child gets through.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

from httpqueue import context


_AWAIT_CHILD = """
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.02)
os.kill(pid, 9)
sys.exit({hung!r})
"""
"""The end of every script below: wait up to 10 s for the child ``pid`` it forked, kill it if it hangs."""


def run_forking(script: str, hung: str, env: dict[str, str] | None = None) -> None:
    """Run ``script`` (which forks a child as ``pid``) in a fresh interpreter; its child must end, and with 0."""
    code = script + _AWAIT_CHILD.format(hung=hung)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


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
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run_forking(script, "the child hung on the metrics lock", env=env)


def test_a_child_forked_while_a_thread_uses_a_redis_pool_can_reset_that_pool() -> None:
    """redis-py's ``reset`` in a forked child takes the pool's lock; httpqueue.celery has it renewed there first.

    What hung a pool child before it said it was up: billiard's after-fork hook
    closes the kombu channels inherited from the parent, and each closes its
    redis-py pool (``disconnect`` -> ``_checkpid`` -> ``reset``), whose lock the
    promoter held mid-publish at the fork. Without the renewal the child below
    waits for that lock for ever (it is killed after 10 s).
    """
    script = textwrap.dedent("""
        import os, sys, threading, time
        import redis
        import httpqueue.celery  # noqa: F401  (renews a pool's lock in a forked child)
        pools = [redis.ConnectionPool(host="127.0.0.1", port=1),
                 redis.BlockingConnectionPool(host="127.0.0.1", port=1)]
        held = threading.Event()
        def hold():
            with pools[0]._lock, pools[1]._lock:  # as get_connection / release do
                held.set()
                time.sleep(1.0)
        threading.Thread(target=hold).start()
        held.wait()
        pid = os.fork()  # while the other thread holds both pools' locks
        if pid == 0:  # the forking thread, as in billiard: not the thread that held the locks
            for pool in pools:
                pool.disconnect()  # what kombu's Channel._disconnect_pools does after a fork
                with pool._lock:
                    pass
            os._exit(0)
    """)
    run_forking(script, "the child hung on a redis-py pool lock it inherited held")


def test_the_pool_lock_renewal_is_only_in_a_forked_child() -> None:
    """In the process that made the pool, ``reset`` keeps its lock (its own threads may hold it)."""
    import redis

    import httpqueue.celery  # noqa: F401

    pool = redis.ConnectionPool(host="127.0.0.1", port=1)
    lock = pool._lock
    pool.reset()
    assert pool._lock is lock
    assert getattr(redis.ConnectionPool.reset, "renews_lock_after_fork", False)


def test_a_child_forked_while_a_thread_reads_the_app_can_read_it_and_send_signals() -> None:
    """kombu's cached properties and Celery's signals have class-wide locks; httpqueue.celery renews them in a child.

    The promoter reads ``app.amqp`` (and the rest) and sends
    ``before_task_publish`` on every publish; a pool child reads ``app.loader``
    before it says it is up, and the others when it publishes. Without the
    renewal the child below waits for ever (it is killed after 10 s).
    """
    script = textwrap.dedent("""
        import os, sys, threading, time
        from celery import signals
        from httpqueue.celery import app
        app.amqp, app.loader  # computed, as in a running worker: a read takes the lock all the same
        held = threading.Event()
        def hold():
            with type(app).amqp.lock, type(app).loader.lock, signals.before_task_publish.lock:
                held.set()
                time.sleep(1.0)
        threading.Thread(target=hold).start()
        held.wait()
        pid = os.fork()  # while the other thread holds the three locks
        if pid == 0:
            app.loader, app.amqp
            signals.before_task_publish.send(sender="test")
            os._exit(0)
    """)
    run_forking(script, "the child hung on a lock of the Celery app it inherited held")


def test_a_child_forked_while_a_topic_is_being_labelled_can_label_topics() -> None:
    """The topic set's lock and a labelled metric's lock, held by another thread at the fork, are fresh in the child."""
    script = textwrap.dedent("""
        import os, sys, threading, time
        from httpqueue import metrics
        held = threading.Event()
        def hold():
            with metrics._topics_lock, metrics.DELIVERED._lock:
                held.set()
                time.sleep(1.0)
        threading.Thread(target=hold).start()
        held.wait()
        pid = os.fork()  # while the other thread holds both locks
        if pid == 0:  # label a new topic and make its child metric
            metrics.for_topic(metrics.DELIVERED, f"fork-{os.getpid()}")
            os._exit(0)
    """)
    run_forking(script, "the child hung on a lock held at the fork")
