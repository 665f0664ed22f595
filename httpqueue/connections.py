"""Redis connections for the store and URLs for the Celery broker, from one setting.

``redis_url`` may be ``redis://``, ``rediss://``, ``unix://`` or a Sentinel list
``sentinel://host:port;sentinel://host:port/db``. The store gets a redis-py client
(through :class:`redis.sentinel.Sentinel` for the latter, so it follows failovers)
and Celery gets the matching kombu URL, so both always talk to the same master.

A ``redis://`` URL may name any node of a Redis Cluster: redis-py has no URL
scheme for cluster mode, so :func:`cluster_enabled` asks the node (``INFO
cluster``) and the store then gets a :class:`~redis.cluster.RedisCluster`,
which finds the other nodes itself. The broker cannot live in a cluster (kombu
has no cluster transport): :func:`check_broker` refuses to start without a
separate one.
"""
from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from httpqueue.config import ConfigError

StoreClient: t.TypeAlias = "redis.Redis | RedisCluster"
"""What the task store holds: one Redis (standalone or a Sentinel's master) or a Redis Cluster."""

CLUSTER_RETRIES = 6
"""Retries of one cluster command after a connection error, a timeout or ``CLUSTERDOWN`` (redirects aside;
redis-py re-reads the slot map between them); then the caller gets a 503."""

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


def cluster_enabled(url: str) -> bool:
    """Whether the node ``url`` names runs in cluster mode (``INFO cluster``: ``cluster_enabled:1``).

    An unreachable node is taken for a standalone Redis, so a process started
    while Redis is away still starts (and answers 503 until it is back); a
    cluster must therefore be reachable through the named node at start.
    """
    if is_sentinel(url) or url.startswith("unix://"):
        return False
    probe = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
    try:
        return str(probe.info("cluster").get("cluster_enabled", 0)) == "1"
    except redis.RedisError:
        return False
    finally:
        probe.close()


def redis_client(url: str, master_name: str = "mymaster", cluster: bool | None = None) -> StoreClient:
    """A client for the task store that retries briefly, then raises (never hangs).

    ``cluster`` None means: ask the node (:func:`cluster_enabled`).
    """
    timeouts: dict[str, t.Any] = dict(
        decode_responses=True, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
    if cluster is None:
        cluster = cluster_enabled(url)
    if cluster:
        # the cluster client retries ConnectionError/TimeoutError/ClusterDownError itself, refreshing the
        # slot map between attempts; its node clients must not retry on their own
        return RedisCluster.from_url(url, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), CLUSTER_RETRIES),
                                     **timeouts)
    options: dict[str, t.Any] = dict(
        timeouts, health_check_interval=15, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    if is_sentinel(url):
        nodes, db, password = sentinel_nodes(url)
        sentinel = Sentinel(nodes, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
        return sentinel.master_for(master_name, db=db, password=password, **options)
    return redis.Redis.from_url(url, **options)


def is_cluster(client: StoreClient) -> bool:
    return isinstance(client, RedisCluster)


def check_broker(store: StoreClient, broker_url: str) -> None:
    """Refuse a Redis Cluster as the Celery broker: kombu has no cluster transport.

    With a cluster store and no ``broker_url``, Celery would fall back to the
    store's URL and fail later, message by message, with MOVED errors.
    """
    if is_cluster(store) and not broker_url:
        raise ConfigError(
            "the task store is a Redis Cluster, which cannot be the Celery broker (kombu has no cluster "
            "transport): set HTTPQUEUE_BROKER_URL to a standalone or Sentinel Redis (redis://, sentinel://) "
            "or to RabbitMQ (amqp://)")


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
