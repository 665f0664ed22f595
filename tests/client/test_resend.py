"""Creates sent again after a lost answer or an API that is not up yet make exactly one task."""
from __future__ import annotations

import asyncio
import threading
import typing as t
from urllib.parse import urlsplit

import pytest

from httpqueue.client import AsyncClient, Client, ConnectionFailed, Retries, State
from httpqueue.embedded import free_port
from tests.client.conftest import TOKEN, Api
from tests.client.proxy import LossyProxy
from tests.support.processes import start_api

NOWHERE = "http://127.0.0.1:9/never"


def test_a_create_whose_answer_is_lost_is_resent_and_makes_one_task(client_api: Api, hq: Client,
                                                                      topic: str) -> None:
    upstream = urlsplit(client_api.url)
    with LossyProxy((upstream.hostname or "", upstream.port or 0), lose=1) as proxy, \
            Client(proxy.url, token=TOKEN, retries=Retries(attempts=3, first_wait=0.05), environ={}) as lossy:
        task = lossy.create(topic, NOWHERE, "once", delay=3600)
        assert proxy.lost == 1 and proxy.connections == 2
    assert task.replayed  # the second send found the task the first one made
    assert [x.id for x in hq.iter_tasks(topic=topic)] == [task.id]


def test_the_async_client_resends_a_lost_create_too(client_api: Api, hq: Client, topic: str) -> None:
    upstream = urlsplit(client_api.url)

    async def create(url: str) -> t.Any:
        async with AsyncClient(url, token=TOKEN, retries=Retries(attempts=3, first_wait=0.05), environ={}) as lossy:
            return await lossy.create(topic, NOWHERE, "once", delay=3600)
    with LossyProxy((upstream.hostname or "", upstream.port or 0), lose=1) as proxy:
        task = asyncio.run(create(proxy.url))
        assert proxy.lost == 1
    assert task.replayed and [x.id for x in hq.iter_tasks(topic=topic)] == [task.id]


def test_a_retry_whose_answer_is_lost_is_not_resent(client_api: Api, hq: Client, topic: str) -> None:
    """A requeue is not idempotent: after a lost answer the client says so rather than sending it twice."""
    task = hq.create(topic, NOWHERE, delay=3600)
    upstream = urlsplit(client_api.url)
    with LossyProxy((upstream.hostname or "", upstream.port or 0), lose=1) as proxy, \
            Client(proxy.url, token=TOKEN, retries=Retries(attempts=3, first_wait=0.05), environ={}) as lossy:
        with pytest.raises(ConnectionFailed) as failed:
            lossy.retry(task.id)
        assert failed.value.sent and proxy.connections == 1
    assert [e.name for e in hq.history(task.id)].count("requeued") == 1


def test_a_create_waits_for_an_api_that_is_not_listening_yet(env: dict[str, str], hq: Client, topic: str) -> None:
    port = free_port()
    outcome: dict[str, t.Any] = {}

    def create() -> None:
        with Client(f"http://127.0.0.1:{port}", token=TOKEN, environ={},
                    retries=Retries(attempts=40, first_wait=0.1, max_wait=0.5)) as early:
            try:
                outcome["task"] = early.create(topic, NOWHERE, "early", delay=3600)
            except Exception as exc:  # reported below with the assertion
                outcome["error"] = exc

    sender = threading.Thread(target=create)
    sender.start()
    api = start_api({**env, "HTTPQUEUE_API_TOKENS": TOKEN}, port, name="client-api-late")
    try:
        sender.join(timeout=30)
        assert not sender.is_alive() and "error" not in outcome, outcome
    finally:
        api.stop()
    task = outcome["task"]
    assert task.state is State.SCHEDULED and not task.replayed
    assert [x.id for x in hq.iter_tasks(topic=topic)] == [task.id]


def test_without_retries_a_refused_connection_raises_at_once() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", environ={}, retries=Retries(attempts=1)) as nobody:
        with pytest.raises(ConnectionFailed) as failed:
            nobody.create("t", NOWHERE, delay=1)
    assert failed.value.sent is False and failed.value.status is None
