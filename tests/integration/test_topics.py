"""Topics as queues, end to end: pause/resume, rate and concurrency limits across two
workers, circuit breaker, purge, dead letters and the failure callback."""
from __future__ import annotations

import typing as t

import pytest
import redis

from tests.support.api import NOWHERE, create, event_names, events, query, state_of, wait_states
from tests.support.processes import start_worker, wait_until
from tests.support.receiver import Answer, Receiver


@pytest.fixture(scope="module")
def second_worker(env: dict[str, str], rclient: redis.Redis, worker: t.Any) -> t.Iterator[t.Any]:
    """A second worker process, so limits are shown to hold across workers."""
    proc = start_worker(env, "worker-topics", rclient)
    yield proc
    proc.stop()


def test_paused_topic_holds_tasks_and_resume_fires_each_once(client: t.Any, receiver: Receiver, worker: t.Any,
                                                            topic: str) -> None:
    assert client.post(f"/v1/topics/{topic}/pause").get_json()["paused"] is True
    path = f"/{topic}"
    ids = [create(client, topic, receiver.url(path), delay=0.2) for _ in range(5)]
    wait_until(lambda: all("held" in event_names(client, i) for i in ids), 15, "tasks held")
    assert [r for r in receiver.requests if r.path == path] == []
    assert {state_of(client, i) for i in ids} == {"scheduled"}
    resumed = client.post(f"/v1/topics/{topic}/resume").get_json()
    assert resumed["paused"] is False
    receiver.wait_for(lambda reqs: len({r.task_id for r in reqs if r.path == path}) == 5)
    wait_states(client, ids, "succeeded")
    assert sorted(r.task_id for r in receiver.requests if r.path == path) == sorted(ids)
    attempts = [query(client, i)["attempts"] for i in ids]
    assert attempts == [1] * 5  # being held is not an attempt


def test_rate_limit_holds_across_two_workers(client: t.Any, receiver: Receiver, worker: t.Any,
                                             second_worker: t.Any, topic: str) -> None:
    rate = 5.0
    assert client.patch(f"/v1/topics/{topic}", json={"rate_limit": rate}).status_code == 200
    path = f"/{topic}"
    ids = [create(client, topic, receiver.url(path), delay=0.1) for _ in range(15)]
    receiver.wait_for(lambda reqs: sum(r.path == path for r in reqs) >= 15, timeout=30)
    arrivals = sorted(r.at for r in receiver.requests if r.path == path)
    assert len(arrivals) == 15
    # GCRA: one slot every 1/rate s, so any window of one second holds at most rate + 1 starts
    most = max(sum(1 for a in arrivals if start <= a < start + 1.0) for start in arrivals)
    assert most <= rate + 1, arrivals
    assert arrivals[-1] - arrivals[0] >= (15 - 1) / rate - 0.3
    wait_states(client, ids, "succeeded")


def test_concurrency_limit_holds_across_two_workers(client: t.Any, receiver: Receiver, worker: t.Any,
                                                    second_worker: t.Any, topic: str) -> None:
    limit, hold = 2, 0.4
    assert client.patch(f"/v1/topics/{topic}", json={"concurrency": limit}).status_code == 200
    path = f"/{topic}"
    receiver.default(path, Answer(delay=hold))
    ids = [create(client, topic, receiver.url(path)) for _ in range(8)]
    wait_states(client, ids, "succeeded", timeout=30)
    arrivals = sorted(r.at for r in receiver.requests if r.path == path)
    assert len(arrivals) == 8
    # each callback is busy for `hold` seconds after it arrives: count overlaps
    overlap = max(sum(1 for b in arrivals if a - hold + 0.02 < b <= a) for a in arrivals)
    assert overlap <= limit, arrivals


def test_circuit_opens_after_failures_in_a_row_and_a_probe_closes_it(client: t.Any, receiver: Receiver,
                                                                     worker: t.Any, topic: str) -> None:
    path = f"/{topic}"
    receiver.default(path, Answer(status=500, body={"code": 500}))
    failing = [create(client, topic, receiver.url(path)) for _ in range(5)]
    wait_states(client, failing, "failed")
    topic_doc = client.get(f"/v1/topics/{topic}").get_json()
    [circuit] = topic_doc["circuits"]
    assert circuit["state"] == "open" and circuit["failures"] >= 5 and circuit["host"].startswith("127.0.0.1:")
    receiver.default(path, Answer())
    later = create(client, topic, receiver.url(path))
    wait_until(lambda: "deferred" in event_names(client, later), 10, "task deferred by the open circuit")
    assert any(e.get("reason") == "circuit open" for e in events(client, later))
    wait_states(client, [later], "succeeded")
    [circuit] = client.get(f"/v1/topics/{topic}").get_json()["circuits"] or [None]
    assert circuit is None or circuit["state"] == "closed"


def test_dead_letters_are_listed_replayed_and_deleted(client: t.Any, receiver: Receiver, worker: t.Any,
                                                      topic: str) -> None:
    path = f"/{topic}"
    receiver.default(path, Answer(body={"code": 7}))
    ids = [create(client, topic, receiver.url(path)) for _ in range(4)]
    wait_states(client, ids, "failed")
    listed = client.get(f"/v1/topics/{topic}/dead-letters").get_json()
    assert sorted(task["id"] for task in listed["tasks"]) == sorted(ids)
    assert all(task["last_error"] for task in listed["tasks"])
    receiver.default(path, Answer())
    one = client.post(f"/v1/topics/{topic}/dead-letters/replay", json={"ids": [ids[0]]})
    assert one.get_json()["count"] == 1
    wait_states(client, [ids[0]], "succeeded")
    dropped = client.post(f"/v1/topics/{topic}/dead-letters/delete", json={"ids": [ids[1]]})
    assert dropped.get_json()["count"] == 1 and state_of(client, ids[1]) == "deleted"
    everything = client.post(f"/v1/topics/{topic}/dead-letters/replay", json={})
    assert everything.get_json()["count"] == 2
    wait_states(client, ids[2:], "succeeded")
    assert client.get(f"/v1/topics/{topic}/dead-letters").get_json()["tasks"] == []
    wrong = client.post(f"/v1/topics/{topic}/dead-letters/replay", json={"ids": [ids[0]]})
    assert wrong.status_code == 409 and "not a dead letter" in wrong.get_json()["error"]


def test_failure_callback_is_notified_once(client: t.Any, receiver: Receiver, worker: t.Any, topic: str) -> None:
    path, notices = f"/{topic}", f"/{topic}-failed"
    receiver.default(path, Answer(status=503, body="down"))
    assert client.patch(f"/v1/topics/{topic}", json={"failure_callback": receiver.url(notices)}).status_code == 200
    task_id = create(client, topic, receiver.url(path), retry=1)
    [notice] = receiver.wait_for(lambda reqs: any(r.path == notices for r in reqs)) and \
        [r for r in receiver.requests if r.path == notices]
    body = notice.json
    assert body["id"] == task_id and body["state"] == "failed" and body["attempts"] == 2
    assert "503" in body["last_error"] and notice.headers["X-Httpqueue-Event"] == "failed"
    assert len(receiver.for_task(task_id)) == 3  # two attempts and one notice, nothing more


def test_purge_deletes_every_pending_task_of_the_topic_only(client: t.Any, topic: str) -> None:
    ids = [create(client, topic, NOWHERE, delay=3600 + i) for i in range(7)]
    other = create(client, topic + "-kept", NOWHERE, delay=3600)
    purged = client.post(f"/v1/topics/{topic}/purge").get_json()
    assert purged["count"] == 7
    assert {state_of(client, i) for i in ids} == {"deleted"}
    assert state_of(client, other) == "scheduled"
    assert client.get(f"/v1/topics/{topic}").get_json()["counts"]["scheduled"] == 0


def test_topics_list_shows_settings_and_counts(client: t.Any, topic: str) -> None:
    create(client, topic, NOWHERE, delay=3600)
    client.patch(f"/v1/topics/{topic}", json={"rate_limit": 2.5, "concurrency": 3})
    [doc] = [t for t in client.get("/v1/topics").get_json()["topics"] if t["topic"] == topic]
    assert doc["rate_limit"] == 2.5 and doc["concurrency"] == 3 and doc["counts"]["scheduled"] == 1
    cleared = client.patch(f"/v1/topics/{topic}", json={"rate_limit": None}).get_json()
    assert cleared["rate_limit"] is None and cleared["concurrency"] == 3


@pytest.mark.parametrize("body, field", [
    ({"rate_limit": -1}, "rate_limit"), ({"rate_limit": "fast"}, "rate_limit"),
    ({"concurrency": 0}, "concurrency"), ({"concurrency": 1.5}, "concurrency"),
    ({"failure_callback": "ftp://x/"}, "failure_callback"), ({"color": "red"}, "color"),
])
def test_topic_settings_are_validated(client: t.Any, topic: str, body: dict[str, t.Any], field: str) -> None:
    response = client.patch(f"/v1/topics/{topic}", json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert field in response.get_json()["error"]


def test_task_failure_callback_wins_over_the_topics(client: t.Any, receiver: Receiver, worker: t.Any,
                                                     topic: str) -> None:
    path, own, topics = f"/{topic}", f"/{topic}-own", f"/{topic}-topic"
    receiver.default(path, Answer(status=500, body="x"))
    client.patch(f"/v1/topics/{topic}", json={"failure_callback": receiver.url(topics)})
    task_id = create(client, topic, receiver.url(path), delay=0, failure_callback=receiver.url(own))
    receiver.wait_for(lambda reqs: any(r.path == own for r in reqs))
    [notice] = [r for r in receiver.requests if r.path == own]
    assert notice.json["id"] == task_id and notice.json["state"] == "failed"
    assert [r for r in receiver.requests if r.path == topics] == []
