"""Redis connections for the store and URLs for the Celery broker, from one setting.

``redis_url`` may be ``redis://``, ``rediss://``, ``unix://`` or a Sentinel list
``sentinel://host:port;sentinel://host:port/db``. The store gets a redis-py client
(through :class:`redis.sentinel.Sentinel` for the latter, so it follows failovers)
and Celery gets the matching kombu URL, so both always talk to the same master.
"""
from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SOCKET_TIMEOUT = 5.0
"""Seconds a Redis command may take before the caller gets a 503 instead of hanging."""


def is_sentinel(url: str) -> bool:
    return url.startswith("sentinel://")


def sentinel_nodes(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """Parse ``sentinel://[:password@]h:p;sentinel://h:p/db`` into nodes, db and password."""
    nodes: list[tuple[str, int]] = []
    db, password = 0, None
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        nodes.append((parsed.hostname or "127.0.0.1", parsed.port or 26379))
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
        password = parsed.password or password
    return nodes, db, password


def redis_client(url: str, master_name: str = "mymaster") -> redis.Redis:
    """A client for the task store that retries briefly, then raises (never hangs)."""
    options: dict[str, t.Any] = dict(
        decode_responses=True, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
        health_check_interval=15, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    if is_sentinel(url):
        nodes, db, password = sentinel_nodes(url)
        sentinel = Sentinel(nodes, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
        return sentinel.master_for(master_name, db=db, password=password, **options)
    return redis.Redis.from_url(url, **options)


def broker_url(url: str) -> str:
    """The kombu spelling of a store URL (kombu writes unix sockets as ``redis+socket://``)."""
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://"):]
    return url


def broker_transport_options(url: str, master_name: str, visibility_timeout: int) -> dict[str, t.Any]:
    """kombu's Redis transport options: bounded socket waits, so a publish never hangs on a dead master.

    Without ``socket_timeout`` kombu waits forever on a connection whose peer
    vanished without closing it (a failover, a partition); the promoter's
    publish would then stop the timer of that worker.
    """
    timeouts = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT}
    options: dict[str, t.Any] = {"visibility_timeout": visibility_timeout, **timeouts}
    if is_sentinel(url):
        options["master_name"] = master_name
        options["sentinel_kwargs"] = dict(timeouts)
    return options
