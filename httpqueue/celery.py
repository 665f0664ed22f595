"""The Celery application: ``celery -A httpqueue worker`` finds it as ``httpqueue.app``.

Its configuration comes from httpqueue's settings (``HTTPQUEUE_*``), evaluated
lazily so the CLI can set options before Celery reads them; a ``celeryconfig``
module on the import path (the project ships one at its top level) may then
override any Celery setting. The promoter and the schedule ticker run inside
every worker as bootsteps; the task module is named with ``include=`` (Celery's
layout) and imports this app, never the other way round.

The broker is the store's Redis unless ``HTTPQUEUE_BROKER_URL`` names another
Redis or RabbitMQ (``amqp://``, :mod:`httpqueue.rabbitmq`); the kombu Redis
workarounds below are applied only when the broker is Redis. Importing this
module also makes redis-py's connection pools renew their lock in a forked
child (:func:`_fork_safe_redis_pools`), whatever the broker, and renews in
every forked child the locks Celery and kombu share between all instances of
a class (:func:`_renew_class_locks_in_child`).
"""
from __future__ import annotations

import os
import sys
import threading
import typing as t

from celery import Celery

from httpqueue import context, rabbitmq
from httpqueue.config import Settings
from httpqueue.connections import broker_transport_options, broker_url
from httpqueue.publish import QUEUE
from httpqueue.worker.promoter import PromoterStep
from httpqueue.worker.scheduler import SchedulerStep

TASK_MODULES = ["httpqueue.worker.tasks"]
"""Modules a worker imports to find its tasks (Celery's ``include``)."""


def celery_config(settings: Settings, redis_url: str) -> dict[str, t.Any]:
    """Celery settings that httpqueue's guarantees rely on (see docs in the README)."""
    url = broker_url(settings.celery_broker_url or redis_url)
    config = {
        "broker_url": url,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE,
        # the store holds every outcome: no result backend
        "task_ignore_result": True,
        "result_backend": None,
        # a message is acknowledged only after its attempt was recorded
        "task_acks_late": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Flower and `celery events` see every delivery message: received, then its outcome once its
        # callbacks are recorded (worker/tasks.py sends that event); the publisher's "task-sent"
        # event is off: it cost ~30% of a publish (docs/benchmarks.rst)
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "worker_prefetch_multiplier": 8,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "broker_pool_limit": 32,
    }
    if rabbitmq.is_amqp(url):
        return {**config, **rabbitmq.celery_settings()}
    return {**config, "broker_transport_options": broker_transport_options(
        url, settings.sentinel_master, settings.visibility_timeout)}


def _defaults() -> dict[str, t.Any]:
    ctx = context.current()
    config = celery_config(ctx.settings, ctx.redis_url)
    if not rabbitmq.is_amqp(config["broker_url"]):
        _patch_kombu_redis()
    return config


def _no_restore_on_connection_loss() -> None:
    """Do not let kombu's Redis transport "restore unacknowledged messages" when its connection drops.

    With the Redis broker gone, kombu 5.x tries to push the worker's prefetched
    (unacknowledged) ETA messages back while closing the dead channel, fails
    with ``AttributeError: 'NoneType' object has no attribute 'hostname'`` and
    Celery stops the consumer for good ("Unrecoverable error"; seen in
    tests/faults, cf. celery/celery#9250, celery/kombu#582). httpqueue does not
    need that restore: each task has a lease in the store, and a promoter
    re-issues it with a new generation when the lease runs out (the old
    message, redelivered after ``visibility_timeout``, is then dropped as stale).
    """
    from kombu.transport import redis as kombu_redis

    kombu_redis.QoS.restore_at_shutdown = False


def _no_acks_on_closed_channels() -> None:
    """Drop the acknowledgement of a message whose broker channel has already closed.

    A task received before the broker connection dropped can finish after the
    consumer reconnected; Celery then acks (or rejects) it on the old channel,
    whose connection is gone, and kombu's Redis QoS raises ``AttributeError:
    'NoneType' object has no attribute 'client'``, which Celery treats as an
    "Unrecoverable error": the worker stops consuming (seen in
    tests/faults/test_sentinel.py after a slow failover). Such a message cannot
    be acknowledged anyway; it stays in kombu's unacked set, comes back after
    ``visibility_timeout`` and is then dropped by the store as stale or done.
    """
    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual

    def closed(qos: t.Any) -> bool:
        return getattr(qos.channel, "closed", False) or qos.channel.connection is None

    def unless_closed(method: t.Callable[..., None]) -> t.Callable[..., None]:
        def call(self: t.Any, delivery_tag: t.Any, *args: t.Any, **kwargs: t.Any) -> None:
            if closed(self):  # forget it locally; there is nothing to tell a dead connection
                virtual.QoS.ack(self, delivery_tag)
                return
            method(self, delivery_tag, *args, **kwargs)
        return call

    kombu_redis.QoS.ack = unless_closed(kombu_redis.QoS.ack)  # type: ignore[method-assign]
    kombu_redis.QoS.reject = unless_closed(kombu_redis.QoS.reject)  # type: ignore[method-assign]


_RLOCK = type(threading.RLock())


def _fork_safe_redis_pools() -> None:
    """Make a redis-py connection pool renew its lock in a forked child before taking it.

    A pool notices a fork at its next use (``_checkpid``) and calls ``reset``
    there. In the redis-py this project runs (8.1), ``reset`` takes the pool's
    ``_lock`` (to count the connections it drops) and no longer replaces it, as
    older versions did. A child forked while a thread of its parent was between
    ``get_connection`` and ``release`` (every Redis command holds ``_lock``
    twice) inherits that lock held by a thread that does not exist in the
    child, and waits for it for ever. In the worker, the promoter publishes
    through kombu's Redis channels while Celery forks its pool, and billiard's
    after-fork hook in the new child closes those channels' pools
    (``Channel._disconnect_pools`` -> ``disconnect`` -> ``_checkpid`` ->
    ``reset``) before Celery's process initializer runs: the child never says
    it is up. Celery watches only replaced children for that (4 s, then a
    kill); a child of the pool's first start just stays silent, so a worker
    whose first children all hung takes messages and runs none of them, with
    nothing in its log (what the kill -9 fault test saw once in CI). Reproduced by
    making the promoter hold that lock longer: the hung child's stack ends in
    ``ConnectionPool.reset``, waiting for the lock.

    Here ``reset`` in a child (the pool's pid is another process's) first
    replaces ``_lock`` by a fresh one of the same kind, as older redis-py did.
    No thread of the child takes the old one: every pool method calls
    ``_checkpid`` first, which waits on the pool's ``_fork_lock`` until this
    reset is done. Idempotent; a pool class with its own ``reset``
    (``BlockingConnectionPool``) gets the same wrapper.
    """
    from redis import connection

    for pool_class in (connection.ConnectionPool, connection.BlockingConnectionPool):
        original = pool_class.__dict__.get("reset")
        if original is not None and not getattr(original, "renews_lock_after_fork", False):
            pool_class.reset = _renewing_lock_after_fork(original)  # type: ignore[method-assign]


def _renewing_lock_after_fork(reset: t.Callable[[t.Any], None]) -> t.Callable[[t.Any], None]:
    """``reset``, preceded in a forked child by a fresh ``_lock`` for the pool."""
    def renewing(pool: t.Any) -> None:
        pid, lock = getattr(pool, "pid", None), getattr(pool, "_lock", None)
        if pid is not None and pid != os.getpid() and lock is not None:
            pool._lock = threading.RLock() if isinstance(lock, _RLOCK) else threading.Lock()
        reset(pool)

    renewing.renews_lock_after_fork = True  # type: ignore[attr-defined]
    renewing.__doc__ = reset.__doc__
    return renewing


def _renew_class_locks_in_child() -> None:
    """In a forked child, give kombu's cached properties and Celery's signals fresh locks.

    kombu's ``cached_property`` takes a lock of the descriptor, one per class
    attribute and shared by every instance, on each read, cached or not;
    Celery's ``Signal.send`` takes the signal's lock. The worker's promoter
    reads ``app.amqp``, ``app.events`` and a Redis channel's ``client`` and
    sends ``before_task_publish`` on every publish (and reads ``app.loader``
    on its first); a pool child reads the same ones (``app.loader`` in
    Celery's process initializer, before the child says it is up;
    ``app.amqp``, ``app.events`` and ``Channel.client`` where it publishes
    task events; ``before_task_publish`` when it asks for a failure
    notification). A child forked while the promoter held one of them would
    wait for it for ever (found by listing what each side touches, not seen
    in a hang: the windows are short). Only the forking thread exists in the
    child, so nothing there holds these locks; a read in progress on the
    forking thread keeps the lock object it took. About 2 ms a fork.
    """
    from celery.utils.dispatch.signal import Signal
    from kombu.utils.objects import cached_property

    # type(), never isinstance(): a module of Celery's holds proxies (current_app, current_task), and
    # isinstance asks a proxy for its __class__, which evaluates it and may read a property not renewed yet
    signals: list[t.Any] = [value for value in vars(app).values() if issubclass(type(value), Signal)]
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("celery", "kombu")):
            continue
        try:
            values = list(vars(module).values())
        except TypeError:  # not a module with a namespace (a lazy stand-in)
            continue
        for value in values:
            kind = type(value)
            if issubclass(kind, Signal):
                signals.append(value)
            elif issubclass(kind, type) and value.__module__ == name:
                for attribute in list(vars(value).values()):
                    if issubclass(type(attribute), cached_property):
                        attribute.lock = threading.RLock()
    for signal in signals:
        signal.lock = threading.Lock()


_patched = False


def _patch_kombu_redis() -> None:
    """Apply the kombu Redis transport workarounds above, once per process (Redis brokers only)."""
    global _patched
    if not _patched:
        _patched = True
        _no_restore_on_connection_loss()
        _no_acks_on_closed_channels()


_fork_safe_redis_pools()

app = Celery("httpqueue", set_as_current=True, include=TASK_MODULES)
app.add_defaults(_defaults)
app.config_from_object("celeryconfig", silent=True)
app.steps["worker"].add(PromoterStep)
app.steps["worker"].add(SchedulerStep)
os.register_at_fork(after_in_child=_renew_class_locks_in_child)
