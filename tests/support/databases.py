"""The suite's Redis databases, one per test that needs a broker of its own, named in one place.

The session's worker consumes the broker in database 0 of the suite's Redis.
A test that starts workers of its own gives them a database of their own, or
the session's worker (or another test's) takes their delivery messages and
drops them as stale: a collision that once hid a failing export test. Pick a
new member here for a new test; the numbers must stay distinct (asserted
below) and within Redis's default 16 databases.
"""
from __future__ import annotations

import enum


class BrokerDb(enum.IntEnum):
    """Which Redis database carries which test's Celery messages."""

    SESSION = 0
    """The session's worker (tests/conftest.py)."""
    RECEIVER_SERVERS = 5
    """tests/receiver/test_servers.py: the signing service."""
    STORE_END_TO_END = 7
    """tests/store/test_end_to_end.py."""
    ETCD_OUTAGE = 9
    """tests/etcd/test_outage.py."""
    COMBINATIONS_STANDALONE = 11
    """tests/integration/test_combinations.py: the standalone store and its broker."""
    COMBINATIONS_CLUSTER = 12
    """tests/integration/test_combinations.py: the Redis broker of the cluster store."""
    EXPORT_END_TO_END = 13
    """tests/export/test_end_to_end.py."""


def url(server_url: str, db: BrokerDb) -> str:
    """``server_url`` (``redis://host:port/n``) with the database ``db`` instead."""
    return f"{server_url.rsplit('/', 1)[0]}/{int(db)}"


assert len(set(BrokerDb)) == len(BrokerDb.__members__) and max(BrokerDb) < 16
