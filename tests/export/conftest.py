"""Fixtures of the exporter tests: a fresh key prefix on the suite's real Redis, and streams filled by hand.

The store's scripts write the event streams in production; here
:func:`add_events` writes entries of the same shape directly, so the exporter
and its sinks are tested without tasks (the end-to-end test uses real ones).
"""
from __future__ import annotations

import itertools
import typing as t

import pytest
import redis

from httpqueue.connections import StoreClient, redis_client
from httpqueue.embedded import EmbeddedRedis
from httpqueue.store.keys import Keys
from tests.support.store import drop_prefix, fresh_prefix

_clock = itertools.count(1_764_130_000_000, 7)


def add_events(client: StoreClient, keys: Keys, count: int, *, shard: int | None = None,
               maxlen: int | None = None, kind: str = "succeeded", topic: str = "orders") -> list[str]:
    """Append ``count`` attempt events (round-robin over the shards unless ``shard``); returns their entry ids.

    ``maxlen`` trims exactly (not ``~``), so tests can count what was dropped.
    """
    ids = []
    for n in range(count):
        where = shard if shard is not None else n % keys.shards
        fields = {"k": kind, "id": f"task-{where}-{n}", "tp": topic, "t": next(_clock), "n": 1, "code": 0,
                  "ms": 12.5, "late": n % 50, "h": "receiver.example"}
        ids.append(str(client.xadd(keys.events(where), fields, maxlen=maxlen, approximate=False)))
    return ids


@pytest.fixture
def rclient_store(redis_server: EmbeddedRedis) -> t.Iterator[StoreClient]:
    client = redis_client(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def keys(rclient_store: StoreClient) -> t.Iterator[Keys]:
    """Keys under a prefix of the test's own (deleted afterwards), 4 shards."""
    made = Keys(fresh_prefix(), 4)
    yield made
    drop_prefix(rclient_store, made)


def pending_count(client: redis.Redis | t.Any, keys: Keys, group: str) -> int:
    """Entries of ``group`` handed out and not acknowledged, over all shards."""
    return sum(int(client.xpending(keys.events(s), group)["pending"]) for s in range(keys.shards))
