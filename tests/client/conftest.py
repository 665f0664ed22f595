"""A real ``httpqueue api`` process (with a bearer token) on the suite's Redis, shared by the client's tests."""
from __future__ import annotations

import typing as t

import pytest

from httpqueue.client import Client, Retries
from httpqueue.embedded import free_port
from tests.support.processes import Proc, start_api

TOKEN = "client-test-token"


class Api(t.NamedTuple):
    url: str
    proc: Proc


@pytest.fixture(scope="session")
def client_api(env: dict[str, str]) -> t.Iterator[Api]:
    """One API for the client's and the CLI's tests (token required), started once."""
    port = free_port()
    proc = start_api({**env, "HTTPQUEUE_API_TOKENS": TOKEN}, port, name="client-api")
    yield Api(f"http://127.0.0.1:{port}", proc)
    proc.stop()


@pytest.fixture
def hq(client_api: Api) -> t.Iterator[Client]:
    with Client(client_api.url, token=TOKEN, retries=Retries(attempts=3, first_wait=0.1), environ={}) as client:
        yield client
