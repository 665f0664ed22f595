"""The client against a real ``httpqueue api`` process: every kind of call, typed results and typed errors."""
from __future__ import annotations

import asyncio
import datetime
import typing as t
import uuid

import pytest

from httpqueue.client import (
    KEEP, AsyncClient, Client, Conflict, HttpMethod, InvalidRequest, Node, NotFound, Options, RetryPolicy, State,
    SuccessRule, TaskSpec, Unauthorized,
)
from tests.client.conftest import TOKEN, Api
from tests.support.processes import wait_until
from tests.support.receiver import Answer, Receiver

NOWHERE = "http://127.0.0.1:9/never"
"""A callback for tasks that never fire within a test (they are an hour away)."""


def test_create_get_history_delete_round_trip(hq: Client, topic: str) -> None:
    options = Options(method=HttpMethod.PUT, headers={"X-Tenant": "acme"}, timeout=3, success=SuccessRule.HTTP_2XX,
                      retry_policy=RetryPolicy(base=2, factor=3))
    task = hq.create(topic, NOWHERE, {"order": 4711}, delay=3600, retry=2, options=options)
    assert task.state is State.SCHEDULED and task.topic == topic and task.content == {"order": 4711}
    assert task.max_retry == 2 and task.options["method"] == "PUT" and task.options["retry_policy"]["factor"] == 3
    assert abs(task.due.timestamp() - (task.created.timestamp() + 3600)) < 2
    assert hq.get(task.id) == dataclass_without_replayed(task)
    assert [e.name for e in hq.history(task.id)] == ["created"]
    deleted = hq.delete(task.id)
    assert (deleted.state, deleted.previous_state) == (State.DELETED, State.SCHEDULED)
    assert hq.get(task.id).state is State.DELETED


def dataclass_without_replayed(task: t.Any) -> t.Any:
    import dataclasses

    return dataclasses.replace(task, replayed=False)


def test_execute_at_as_aware_datetime_and_idempotent_create(hq: Client, topic: str) -> None:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    key = f"key-{uuid.uuid4()}"
    first = hq.create(topic, NOWHERE, "x", execute_at=when, idempotency_key=key)
    again = hq.create(topic, NOWHERE, "x", execute_at=when, idempotency_key=key)
    assert again.id == first.id and again.replayed and not first.replayed
    assert abs(first.execute_time_ms / 1000 - when.timestamp()) < 0.01
    with pytest.raises(ValueError, match="time zone"):
        hq.create(topic, NOWHERE, execute_at=datetime.datetime(2030, 1, 1))


def test_errors_are_typed_and_carry_the_api_code_message_and_fields(hq: Client, client_api: Api,
                                                                     topic: str) -> None:
    with pytest.raises(InvalidRequest) as invalid:
        hq.create(topic, "not a url", delay=-1)
    assert invalid.value.status == 400 and invalid.value.code == 400
    assert set(invalid.value.fields) == {"delay", "callback"} and "delay" in invalid.value.message
    with pytest.raises(NotFound) as missing:
        hq.get(f"no-such-{uuid.uuid4()}")
    assert missing.value.status == 404 and "no task" in missing.value.message
    task_id = f"mine-{uuid.uuid4()}"
    hq.create(topic, NOWHERE, "a", delay=3600, id=task_id)
    with pytest.raises(Conflict) as conflict:
        hq.create(topic, NOWHERE, "b", delay=3600, id=task_id)
    assert conflict.value.status == 409
    with Client(client_api.url, token="wrong", environ={}) as stranger, pytest.raises(Unauthorized) as refused:
        stranger.stats()
    assert refused.value.status == 401 and "bearer token" in refused.value.message


def test_url_and_token_come_from_the_environment(client_api: Api, topic: str) -> None:
    environ = {"HTTPQUEUE_URL": client_api.url + "/", "HTTPQUEUE_TOKEN": TOKEN}
    with Client(environ=environ) as from_env:
        assert from_env.url == client_api.url
        assert from_env.create(topic, NOWHERE, delay=3600).topic == topic
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:2356", environ={})


def test_list_iterates_over_cursors_and_batches_split_past_a_thousand(hq: Client, topic: str) -> None:
    specs = [TaskSpec(topic, NOWHERE, i, delay=3600) for i in range(1001)]
    results = hq.create_many(specs)
    assert len(results) == 1001 and all(r.ok and r.id for r in results)
    assert len({r.id for r in results}) == 1001
    first = hq.list_tasks(topic=topic, limit=400)
    assert len(first.tasks) == 400 and first.next_cursor
    listed = [task.id for task in hq.iter_tasks(topic=topic, page_size=300)]
    assert sorted(listed) == sorted(r.id for r in results if r.id)
    assert len(list(hq.iter_tasks(topic=topic, page_size=100, max_pages=2))) == 200
    assert hq.stats().topics[topic][State.SCHEDULED] == 1001
    assert hq.purge_topic(topic) == 1001
    assert hq.stats().topics[topic][State.DELETED] == 1001


def test_batch_refuses_an_item_without_stopping_the_others(hq: Client, topic: str) -> None:
    results = hq.create_many([TaskSpec(topic, NOWHERE, delay=3600), TaskSpec(topic, NOWHERE, delay=-5)])
    assert results[0].ok and not results[1].ok and "delay" in results[1].fields


def test_topics_settings_pause_resume(hq: Client, topic: str) -> None:
    hq.create(topic, NOWHERE, delay=3600)
    limited = hq.configure_topic(topic, rate_limit=5, concurrency=2)
    assert (limited.rate_limit, limited.concurrency) == (5, 2)
    kept = hq.configure_topic(topic, rate_limit=None, concurrency=KEEP)
    assert (kept.rate_limit, kept.concurrency) == (None, 2)
    assert hq.pause_topic(topic).paused is True
    listed = {x.topic: x for x in hq.list_topics()}
    assert listed[topic].paused and listed[topic].counts[State.SCHEDULED] == 1
    assert hq.resume_topic(topic).paused is False
    assert hq.get_topic(topic).counts[State.SCHEDULED] == 1
    with pytest.raises(InvalidRequest) as invalid:
        hq.configure_topic(topic, rate_limit=-1)
    assert "rate_limit" in invalid.value.fields


def test_dead_letters_retry_replay_and_delete(hq: Client, receiver: Receiver, worker: t.Any, topic: str) -> None:
    path = f"/{topic}"
    receiver.default(path, Answer({"code": 500}))
    ids = [hq.create(topic, receiver.url(path), i, delay=0).id for i in range(3)]
    wait_until(lambda: all(hq.get(i).state is State.FAILED for i in ids), 20, "three dead letters")
    assert sorted(t.id for t in hq.iter_dead_letters(topic, page_size=2)) == sorted(ids)
    receiver.default(path, Answer({"code": 100}))
    retried = hq.retry(ids[0])
    assert (retried.state, retried.previous_state) == (State.RETRYING, State.FAILED)
    assert hq.replay_dead_letters(topic, [ids[1]]) == 1
    wait_until(lambda: all(hq.get(i).state is State.SUCCEEDED for i in ids[:2]), 20, "replayed tasks delivered")
    assert hq.delete_dead_letters(topic) == 1
    assert hq.dead_letters(topic).tasks == []
    with pytest.raises(Conflict) as conflict:
        hq.retry(ids[0])
    assert conflict.value.status == 409


def test_schedules(hq: Client, topic: str) -> None:
    created = hq.create_schedule("0 9 * * 1-5", TaskSpec(topic, NOWHERE, {"kind": "daily"}),
                                 timezone="Europe/Berlin")
    assert created.next_tick_ms and created.task["topic"] == topic and created.timezone == "Europe/Berlin"
    assert hq.get_schedule(created.id) == created
    assert created.id in {s.id for s in hq.list_schedules()}
    assert hq.pause_schedule(created.id).next_tick_ms is None
    assert hq.resume_schedule(created.id).next_tick_ms
    hq.delete_schedule(created.id)
    with pytest.raises(NotFound):
        hq.get_schedule(created.id)
    with pytest.raises(InvalidRequest):
        hq.create_schedule("every morning", TaskSpec(topic, NOWHERE))


def test_the_original_endpoints(hq: Client, topic: str) -> None:
    created = hq.original_create(topic, NOWHERE, "hello", delay=3600)
    assert not created.replayed
    queried = hq.original_query(created.id)
    assert (queried.content, queried.state) == ("hello", State.SCHEDULED)
    assert hq.original_delete(created.id).state is State.DELETED
    with pytest.raises(NotFound):
        hq.original_query(f"missing-{uuid.uuid4()}")


def test_operations(hq: Client, worker: t.Any) -> None:
    assert hq.health() is True
    assert hq.ready().ready is True
    status = hq.status()
    assert status.ready is True and status.problems == [] and status.overdue["tasks"] >= 0
    assert "httpqueue" in hq.metrics()
    minutes = hq.series(5)
    assert len(minutes) == 5 and all(m.at > 0 for m in minutes) and minutes == sorted(minutes, key=lambda m: m.at)


def test_nodes(hq: Client, client_api: Api, worker: t.Any) -> None:
    """The registry lists the test's API process (named by its address) and the suite's worker."""
    address = client_api.url.removeprefix("http://")

    def listed() -> list[Node] | None:
        found = hq.nodes()
        return found if {"api", "worker"} <= {n.role for n in found} and any(
            n.role == "api" and n.name and address in n.name for n in found) else None
    nodes = wait_until(listed, 15, "the API and the worker in /v1/nodes")
    mine = next(n for n in nodes if n.role == "api" and n.name and address in n.name)
    assert mine.pid and mine.incarnation and mine.last_seen and mine.raw["pid"] == mine.pid


def test_async_client(client_api: Api, topic: str) -> None:
    async def scenario() -> list[str]:
        async with AsyncClient(client_api.url, token=TOKEN, environ={}) as hq:
            made = [await hq.create(topic, NOWHERE, i, delay=3600) for i in range(3)]
            batch = await hq.create_many([TaskSpec(topic, NOWHERE, delay=3600)] * 2)
            assert (await hq.get(made[0].id)).content == 0
            with pytest.raises(NotFound):
                await hq.get("missing")
            assert (await hq.stats()).topics[topic][State.SCHEDULED] == 5
            listed = [task.id async for task in hq.iter_tasks(topic=topic, page_size=2)]
            assert len(listed) == 5 and {b.id for b in batch} <= set(listed)
            return listed
    assert len(asyncio.run(scenario())) == 5
