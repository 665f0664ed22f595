"""Every store test runs twice: on a standalone Redis and on a Redis Cluster (3 masters, 3 replicas).

The store's contract does not depend on the kind of Redis behind it, so the
same tests check both (parametrised, not copied); a test id ends in
``[standalone]`` or ``[cluster]``.
"""
from __future__ import annotations

import pytest

from tests.support.cluster import STORE_KINDS


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
