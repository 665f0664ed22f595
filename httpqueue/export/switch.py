"""Turning event writing on and off for the whole store: one small key per shard that the scripts read.

The Lua scripts append an event only while their shard's switch key
(:meth:`~httpqueue.store.keys.Keys.export_switch`) holds a bound above 0: the
stream's ``MAXLEN ~``. A key rather than an argument of every script call, so
that turning export on or off needs no restart of the API or the workers, and
so that a process started without the setting cannot turn it off by accident:
processes only turn it on (:func:`enable`); :func:`disable` is an explicit act
(``httpqueue export --off``).
"""
from __future__ import annotations

from httpqueue.connections import StoreClient
from httpqueue.store.keys import Keys


def enable(client: StoreClient, keys: Keys, max_events: int) -> None:
    """Make every shard's scripts write events, keeping about ``max_events`` per shard."""
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.shards):
        pipe.set(keys.export_switch(shard), max_events)
    pipe.execute()


def disable(client: StoreClient, keys: Keys) -> None:
    """Stop writing events (the streams and what they hold stay until exported or deleted)."""
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.shards):
        pipe.delete(keys.export_switch(shard))
    pipe.execute()


def bounds(client: StoreClient, keys: Keys) -> list[int]:
    """Each shard's current bound (0: off)."""
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.shards):
        pipe.get(keys.export_switch(shard))
    return [int(v or 0) for v in pipe.execute()]
