"""Listing pages (GET /v1/tasks, dead letters) against a real Redis with 4 shards and a real worker.

A page holds ``limit`` tasks whenever that many match, whichever shards and
sets they sit in, and ``next_cursor`` is null once nothing matches beyond the
page: a client never has to follow a cursor to an empty page (unless a page's
scan budget ran out, see :meth:`TaskStore.list_tasks`).
"""
from __future__ import annotations

import typing as t
import uuid

import pytest
import redis

from httpqueue.clock import now_ms
from httpqueue.config import Settings
from httpqueue.context import Context
from httpqueue.states import Outcome, State
from httpqueue.store.records import Created, NewTask, Settlement
from httpqueue.store.tasks import LIST_BUDGET, TaskStore
from tests.support.processes import wait_until
from tests.support.receiver import Answer, Receiver


def make_many(client: t.Any, topic: str, count: int, delay: float = 3600, callback: str = "http://127.0.0.1:9/",
              retry: int = 0) -> list[str]:
    """Create ``count`` tasks in one batch request; their ids, in order."""
    tasks = [{"topic": topic, "delay": delay + i / 1000, "retry": retry, "callback": callback} for i in range(count)]
    response = client.post("/v1/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 200, response.get_data(as_text=True)
    ids = [item.get("id") for item in response.get_json()["results"]]
    assert all(ids), response.get_json()
    return t.cast(list[str], ids)


def states(client: t.Any, ids: t.Iterable[str]) -> set[str]:
    return {client.get(f"/v1/tasks/{i}").get_json()["state"] for i in ids}


def wait_states(client: t.Any, ids: t.Sequence[str], state: str, timeout: float = 30) -> None:
    wait_until(lambda: states(client, ids) == {state}, timeout, f"{len(ids)} tasks {state}", interval=0.1)


def walk(client: t.Any, path: str, query: dict[str, t.Any], pages: int = 50) -> list[list[str]]:
    """Every page of a listing, following ``next_cursor`` until it is null."""
    out: list[list[str]] = []
    cursor = None
    for _ in range(pages):
        response = client.get(path, query_string={**query, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        out.append([task["id"] for task in page["tasks"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert out[-1], f"an empty page with a cursor ({cursor}) after {len(out)} pages"
    raise AssertionError(f"no end after {pages} pages")


@pytest.fixture(scope="module")
def crowd(app: t.Any) -> str:
    """Tasks of another topic in every shard's timer, listed before any finished task of the tests."""
    topic = "listing-crowd"
    make_many(app.test_client(), topic, 1000)
    return topic


def test_a_few_finished_tasks_fill_the_first_page(client: t.Any, worker: t.Any, receiver: Receiver, crowd: str,
                                                  topic: str) -> None:
    ids = make_many(client, topic, 3, delay=0, callback=receiver.url(f"/{topic}"))
    wait_states(client, ids, "succeeded")
    page = client.get("/v1/tasks", query_string={"topic": topic, "limit": 100}).get_json()
    assert sorted(task["id"] for task in page["tasks"]) == sorted(ids)
    assert page["next_cursor"] is None


def test_paging_through_120_tasks_returns_each_once_in_full_pages(client: t.Any, crowd: str, topic: str) -> None:
    ids = make_many(client, topic, 120)
    pages = walk(client, "/v1/tasks", {"topic": topic, "limit": 50})
    assert [len(p) for p in pages] == [50, 50, 20]
    seen = [i for p in pages for i in p]
    assert len(seen) == len(set(seen)) and set(seen) == set(ids)
    # the same order again: a cursor is a stable position, not a snapshot
    assert walk(client, "/v1/tasks", {"topic": topic, "limit": 50}) == pages


def test_a_last_full_page_has_no_cursor(client: t.Any, topic: str) -> None:
    make_many(client, topic, 10)
    pages = walk(client, "/v1/tasks", {"topic": topic, "limit": 5})
    assert [len(p) for p in pages] == [5, 5]


def test_listing_filters_by_state_and_topic(client: t.Any, worker: t.Any, receiver: Receiver, crowd: str,
                                            topic: str) -> None:
    scheduled = make_many(client, topic, 4)
    deleted = scheduled.pop()
    assert client.delete(f"/v1/tasks/{deleted}").status_code == 200
    succeeded = make_many(client, topic, 2, delay=0, callback=receiver.url(f"/{topic}"))
    other = make_many(client, topic + "-other", 3)
    wait_states(client, succeeded, "succeeded")

    def listed(**query: t.Any) -> set[str]:
        return {i for p in walk(client, "/v1/tasks", {"topic": topic, "limit": 2, **query}) for i in p}

    assert listed(state="scheduled") == set(scheduled)
    assert listed(state="deleted") == {deleted}
    assert listed(state="succeeded") == set(succeeded)
    assert listed(state="failed") == set()
    assert listed() == {*scheduled, deleted, *succeeded}
    assert not listed() & set(other)
    anyone = client.get("/v1/tasks", query_string={"state": "scheduled", "limit": 500}).get_json()["tasks"]
    assert anyone and {task["state"] for task in anyone} == {"scheduled"}  # no topic: every topic's


def test_dead_letters_page_newest_first(client: t.Any, worker: t.Any, receiver: Receiver, topic: str) -> None:
    path = f"/{topic}"
    receiver.default(path, Answer(status=500, body="down"))
    failed = make_many(client, topic, 5, delay=0, callback=receiver.url(path))
    make_many(client, topic, 2)  # waiting tasks of the topic are not dead letters
    wait_states(client, failed, "failed")
    pages = walk(client, f"/v1/topics/{topic}/dead-letters", {"limit": 2})
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(i for p in pages for i in p) == sorted(failed)
    everything = client.get(f"/v1/topics/{topic}/dead-letters", query_string={"limit": 100}).get_json()
    assert len(everything["tasks"]) == 5 and everything["next_cursor"] is None
    assert all(task["state"] == "failed" and task["last_error"] for task in everything["tasks"])


def test_a_spent_scan_budget_answers_a_cursor_that_continues(client: t.Any, crowd: str, settings: Settings,
                                                             topic: str) -> None:
    """Only a page whose budget ran out may be short (even empty) with a cursor; following it finds the rest."""
    ids = make_many(client, topic, 3, delay=7200)  # after the crowd in each shard's timer
    store = Context(settings).store
    seen: list[str] = []
    cursor: str | None = None
    short = 0
    for _ in range(5000):
        page = store.list_tasks(State.SCHEDULED, topic, cursor, limit=100, budget=200)
        seen += [task.id for task in page.tasks]
        short += len(page.tasks) < 100 and page.cursor is not None
        cursor = page.cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert short > 0  # the budget did run out on the way (the crowd is 1,000 tasks)


@pytest.fixture(scope="module")
def crowded(settings: Settings, rclient: redis.Redis) -> t.Iterator[tuple[TaskStore, str]]:
    """A store of its own key prefix whose timer holds more tasks than the old per-page budget (20,000).

    Its own prefix, so the crowd does not slow down other tests' listings;
    its keys are deleted at the end.
    """
    ctx = Context(settings.replace(key_prefix=f"listing-{uuid.uuid4().hex[:8]}"))
    store, now = ctx.store, now_ms()
    for start in range(0, 24_000, 2000):
        store.create_many([NewTask("crowd", "http://127.0.0.1:9/", None, now + 3_600_000 + i, 0)
                           for i in range(start, start + 2000)], now)
    yield store, "crowd"
    keys = list(rclient.scan_iter(match=f"{ctx.keys.prefix}:*", count=10_000))
    for first in range(0, len(keys), 2000):
        rclient.unlink(*keys[first:first + 2000])


def finish(store: TaskStore, topic: str, count: int) -> list[str]:
    """``count`` tasks created due now, claimed and settled as succeeded: the store's own scripts, no worker."""
    now = now_ms()
    created = store.create_many([NewTask(topic, "http://127.0.0.1:9/", None, now, 0) for _ in range(count)], now)
    dispatches = [c.dispatch for c in created if isinstance(c, Created) and c.dispatch]
    assert len(dispatches) == count
    claimed = store.claim_many([(d.task_id, d.gen) for d in dispatches], now, 60_000)
    assert store.settle_many([Settlement(task.id, task.gen, now_ms(), Outcome.SUCCEEDED, code=100)
                              for task in claimed]) == [True] * count
    return [d.task_id for d in dispatches]


def test_finished_tasks_behind_a_crowd_fill_the_first_page(crowded: tuple[TaskStore, str], topic: str) -> None:
    """The reported case: 3 finished tasks listed after 24,000 waiting ones (all sets, 4 shards)."""
    store, _ = crowded
    ids = finish(store, topic, 3)
    assert LIST_BUDGET > 24_000
    page = store.list_tasks(None, topic, None, limit=100)
    assert sorted(task.id for task in page.tasks) == sorted(ids) and page.cursor is None
    assert [task.state for task in page.tasks] == [State.SUCCEEDED] * 3
    crowd = store.list_tasks(State.SCHEDULED, "crowd", None, limit=500)
    assert len(crowd.tasks) == 500 and crowd.cursor


@pytest.mark.parametrize("cursor", ["0000.1.009293699967807004970990", "0.1.9999999999999999", "1000.0.0"])
def test_a_cursor_with_numbers_no_page_has_is_refused_not_a_500(client: t.Any, cursor: str) -> None:
    """Found by the OpenAPI fuzzer: an offset past a double's integers failed in the listing script (a 500)."""
    answer = client.get(f"/v1/tasks?cursor={cursor}")
    assert answer.status_code == 400 and "cursor" in answer.get_json()["fields"]


def test_the_largest_offset_a_cursor_may_have_is_read_past_the_end_of_its_shard(client: t.Any) -> None:
    answer = client.get("/v1/tasks?cursor=0.1.999999999999999")
    assert answer.status_code == 200 and isinstance(answer.get_json()["tasks"], list)
