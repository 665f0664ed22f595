"""Recovery in seconds: a killed worker's attempts are re-issued when its heartbeat stops, not when its lease runs out.

With the default timings (heartbeat 1 s, gone after 6 s, lease 30 s, callback
timeout 10 s) a worker killed with -9 while it holds attempts in flight: the
other worker's promoter sees the dead incarnation, releases its attempts, and
reclaim re-issues them with a new generation. The bound is 10 s from the kill
to every task delivered; the test allows 15 s for a loaded machine. Without the
registry the same attempts wait for their lease (the task's 40 s timeout plus
the 30 s lease here).
"""
from __future__ import annotations

import time
import typing as t

import pytest
import requests

from httpqueue import nodes
from httpqueue.store.keys import Keys
from tests.support.faults import Service
from tests.support.processes import wait_until
from tests.support.receiver import Answer, Receiver

pytestmark = pytest.mark.faults

TASKS = 12
RECOVERY_BOUND_S = 15.0
"""Kill to full delivery: 10 s by design (6 s without a beat, 1 s to the next look, then one pass and one
attempt), plus margin for a loaded machine."""

DEFAULT_TIMINGS = {"lease": 30.0, "callback_timeout": 10.0, "promoter_interval": 0.25, "timer_horizon": 60.0,
                   "visibility_timeout": 3600}
"""The settings' defaults for what decides recovery time (the fault suite's own are much shorter)."""


@pytest.fixture
def service(tmp_path: t.Any) -> t.Iterator[Service]:
    svc = Service(tmp_path, **DEFAULT_TIMINGS)
    yield svc
    svc.stop()


@pytest.fixture
def slow_receiver() -> t.Iterator[Receiver]:
    """A receiver of the test's own: its held answers must not linger into another test's receiver."""
    server = Receiver().start()
    yield server
    server.stop()


def test_kill_9_worker_holding_attempts_recovers_within_seconds(service: Service, slow_receiver: Receiver) -> None:
    receiver, path = slow_receiver, "/held"
    receiver.script(path, *[Answer(delay=60.0) for _ in range(TASKS)])  # first attempts stay in flight
    receiver.default(path, Answer())
    service.start_api()
    victim = service.start_worker("recovery-victim")
    ids = []
    for n in range(TASKS):
        created = requests.post(f"{service.url}/v1/tasks", timeout=10, json={
            "topic": "recovery", "delay": 0, "retry": 0, "timeout": 40, "callback": receiver.url(path),
            "content": {"n": n}})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    receiver.wait_for(lambda reqs: {r.task_id for r in reqs if r.path == path} >= set(ids), timeout=20)

    # the heir runs, and has been beating long enough to release others' attempts, before the kill
    service.start_worker("recovery-heir")
    registry = nodes.RedisRegistry(service.client, Keys(service.settings.get("key_prefix", "hq")))

    def heir_steady() -> bool:
        heir = [n for n in registry.live() if n.identity.name == "recovery-heir@localhost"]
        return bool(heir) and time.time() - heir[0].identity.started > nodes.HEARTBEAT_TTL + 1

    wait_until(heir_steady, 30, "the heir's heartbeat steady", interval=0.2)
    victim_node = next(n for n in registry.live() if n.identity.name == "recovery-victim@localhost")

    victim.kill9()
    killed_at = time.time()

    def delivered_again() -> bool:
        return all(any(r.at > killed_at and r.task_id == i for r in receiver.requests) for i in ids)

    wait_until(delivered_again, 60, "every held task re-issued and delivered", interval=0.1)
    full = max(min(r.at for r in receiver.requests if r.task_id == i and r.at > killed_at) for i in ids)
    recovery = full - killed_at
    print(f"kill -9 worker holding {TASKS} attempts: all delivered {recovery:.2f} s after the kill")
    assert recovery <= RECOVERY_BOUND_S, f"{recovery:.1f} s from kill to full delivery"

    for task_id in ids:  # the documented duplicate: the same id again, with a higher attempt number
        attempts = [int(r.headers.get("X-Httpqueue-Attempt", "0")) for r in receiver.requests
                    if r.task_id == task_id]
        assert attempts[0] == 1 and attempts[-1] > 1 and len(set(attempts)) == len(attempts), attempts
    wait_until(lambda: all(requests.get(f"{service.url}/v1/tasks/{i}", timeout=5).json()["state"] == "succeeded"
                           for i in ids), 15, "every task recorded as succeeded")
    assert victim_node.identity.incarnation not in {n.identity.incarnation for n in registry.live()}
    assert registry.departed(nodes.Role.WORKER) == []  # released and removed, not left to run out


HELD_DELAY_S = 25.0
"""Delay of the tasks whose messages the victim holds: long enough for the heir to start and be steady."""

ON_TIME_S = 3.0
"""How late a held task may fire after its victim went (its due time plus margin for a loaded machine); it
waited for its 30 s lease before."""


def held_tasks(service: Service, receiver: Receiver, path: str, victim_name: str) -> tuple[list[str], float]:
    """Tasks created while only the victim runs, so it alone holds their ETA messages; waits until noted."""
    ids = []
    for n in range(TASKS):
        created = requests.post(f"{service.url}/v1/tasks", timeout=10, json={
            "topic": "held", "delay": HELD_DELAY_S, "retry": 0, "callback": receiver.url(path), "content": {"n": n}})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    due = time.time() + HELD_DELAY_S
    registry = nodes.RedisRegistry(service.client, Keys(service.settings.get("key_prefix", "hq")))
    victim = wait_until(lambda: [n for n in registry.live() if n.identity.name == victim_name], 20, "victim registered")
    keys = Keys(service.settings.get("key_prefix", "hq"))

    def noted() -> set[str]:
        return {m.decode().split("|")[0] for s in range(keys.shards)
                for m in service.client.zrange(keys.holding(s, victim[0].identity.incarnation), 0, -1)}

    wait_until(lambda: noted() >= set(ids), 10, "the victim's held messages noted in the store")
    return ids, due


def arrivals(receiver: Receiver, ids: list[str]) -> dict[str, list[float]]:
    return {i: [r.at for r in receiver.requests if r.task_id == i] for i in ids}


def assert_fired_once_on_time(receiver: Receiver, ids: list[str], due: float, fault: str) -> None:
    """Every held task arrives within :data:`ON_TIME_S` of its due time, and once (none was in flight)."""
    wait_until(lambda: all(arrivals(receiver, ids).values()), 60, "every held task delivered")
    late = max(min(at) - due for at in arrivals(receiver, ids).values())
    print(f"{fault} of a worker holding {TASKS} ETA messages: the last task fired {late:.2f} s after its due time")
    assert late <= ON_TIME_S, f"{late:.1f} s late: the held messages waited for their lease"
    time.sleep(1)
    assert all(len(at) == 1 for at in arrivals(receiver, ids).values())


def test_kill_9_worker_holding_eta_messages_its_tasks_fire_on_time(service: Service, slow_receiver: Receiver) -> None:
    """The victim holds ETA messages not yet due (Redis broker): after its death they fire at their due time."""
    receiver, path = slow_receiver, "/held-kill"
    service.start_api()
    victim = service.start_worker("held-victim")
    ids, due = held_tasks(service, receiver, path, "held-victim@localhost")
    service.start_worker("held-heir")
    registry = nodes.RedisRegistry(service.client, Keys(service.settings.get("key_prefix", "hq")))
    wait_until(lambda: [n for n in registry.live() if n.identity.name == "held-heir@localhost"
                        and time.time() - n.identity.started > nodes.HEARTBEAT_TTL + 1], 30, "the heir steady")
    assert time.time() < due - 8, "the machine is too slow for this test's timing: the tasks are nearly due"
    victim.kill9()
    assert_fired_once_on_time(receiver, ids, due, "kill -9")


def test_a_worker_stopping_cleanly_hands_its_held_messages_on(service: Service, slow_receiver: Receiver) -> None:
    """A restart (SIGTERM, warm shutdown) of the worker that holds ETA messages does not make their tasks late."""
    receiver, path = slow_receiver, "/held-stop"
    service.start_api()
    victim = service.start_worker("stopping")
    ids, due = held_tasks(service, receiver, path, "stopping@localhost")
    service.start_worker("stopping-heir")
    victim.stop()
    assert victim.process.returncode == 0, victim.output()[-2000:]
    assert "held_released" in victim.output()
    assert_fired_once_on_time(receiver, ids, due, "warm shutdown")
