"""Helpers of the fault suite: a whole service of its own, a steady load, and the final tally.

Each fault test runs its own Redis, API and workers (it kills them), drives a
steady load of creates (and some deletes) through the HTTP API, injects its
fault, and then checks with a deadline that every acknowledged create was
delivered exactly once, apart from the documented duplicate window, and that
no task fired after its delete was acknowledged.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import random
import threading
import time
import typing as t
from pathlib import Path

import redis
import requests

from httpqueue.embedded import EmbeddedRedis, free_port
from tests.support.processes import ARTIFACTS, Proc, settings_env, start_api, start_worker, wait_until
from tests.support.receiver import Receiver
from tests.support.settings import TEST_SETTINGS

FAULT_SETTINGS = {**TEST_SETTINGS, "lease": 2.0, "callback_timeout": 1.0, "promoter_interval": 0.05}


@dataclasses.dataclass
class Load:
    """What a load run did: acknowledged creates, acknowledged deletes (with their time), errors."""

    acked: dict[str, float] = dataclasses.field(default_factory=dict)  # id -> due (epoch s)
    deleted: dict[str, float] = dataclasses.field(default_factory=dict)  # id -> time the delete was acked
    statuses: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    errors: int = 0
    slowest: float = 0.0


class Service:
    """Redis, gunicorn API and workers started for one fault test."""

    def __init__(self, tmp: Path, redis_url: str | None = None, **overrides: t.Any) -> None:
        self.tmp = tmp
        self.redis_server = None if redis_url else EmbeddedRedis(tmp / "redis", port=free_port()).start()
        self.redis_url = redis_url or self.redis_server.url  # type: ignore[union-attr]
        self.settings = {**FAULT_SETTINGS, "redis_url": self.redis_url, **overrides}
        self.env = settings_env(self.settings)
        self.api_port = free_port()
        self.workers: list[Proc] = []
        self.apis: list[Proc] = []
        self.client = None if redis_url and redis_url.startswith("sentinel") else redis.Redis.from_url(self.redis_url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_worker(self, name: str, client: redis.Redis | None = None) -> Proc:
        proc = start_worker(self.env, name, client or self.client)  # type: ignore[arg-type]
        self.workers.append(proc)
        return proc

    def start_api(self, name: str = "api-fault", workers: int = 2) -> Proc:
        proc = start_api(self.env, self.api_port, name=name, workers=workers)
        self.apis.append(proc)
        return proc

    def stop(self) -> None:
        for proc in [*self.apis, *self.workers]:
            proc.stop()
        if self.redis_server is not None:
            self.redis_server.stop()


def drive(url: str, receiver: Receiver, path: str, seconds: float, rate: float, load: Load,
          delays: tuple[float, float] = (0.2, 3.0), delete_every: int = 10,
          stop: threading.Event | None = None) -> threading.Thread:
    """Post creates at ``rate``/s for ``seconds`` in a thread; delete every ``delete_every``-th task soon after."""
    session = requests.Session()

    def run() -> None:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds and not (stop and stop.is_set()):
            n += 1
            delay = random.uniform(*delays) if n % delete_every else 2.5
            sent = time.monotonic()
            try:
                response = session.post(f"{url}/create", timeout=10, json={
                    "topic": "faults", "delay": delay, "retry": 5, "callback": receiver.url(path)})
                load.statuses[response.status_code] += 1
                if response.status_code == 200:
                    task_id = response.json()["id"]
                    load.acked[task_id] = time.time() + delay
                    if n % delete_every == 0:
                        deleted = session.post(f"{url}/delete", json={"id": task_id}, timeout=10)
                        if deleted.status_code == 200:
                            load.deleted[task_id] = time.time()
            except requests.RequestException:
                load.errors += 1
            load.slowest = max(load.slowest, time.monotonic() - sent)
            time.sleep(max(0.0, n / rate - (time.monotonic() - start)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@dataclasses.dataclass
class Tally:
    driven: int
    lost: list[str]
    duplicated: dict[str, list[int]]
    fired_after_delete: list[str]
    recovery_s: float | None = None

    def report(self, name: str, faults: int, **extra: t.Any) -> dict[str, t.Any]:
        doc = {"test": name, "tasks_driven": self.driven, "faults_injected": faults, "lost": len(self.lost),
               "duplicated": len(self.duplicated), "fired_after_delete": len(self.fired_after_delete),
               "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2), **extra}
        ARTIFACTS.mkdir(exist_ok=True)
        with open(ARTIFACTS / "faults.jsonl", "a") as out:
            out.write(json.dumps(doc) + "\n")
        print(json.dumps(doc))
        return doc


def settle(load: Load, receiver: Receiver, path: str, timeout: float) -> Tally:
    """Wait until every acknowledged, undeleted task arrived (or ``timeout``), then count."""
    expected = set(load.acked) - set(load.deleted)

    def arrived() -> set[str]:
        return {r.task_id for r in receiver.requests if r.path == path}

    try:
        wait_until(lambda: expected <= arrived(), timeout, "every acknowledged task delivered", interval=0.2)
    except AssertionError:
        pass
    by_id: dict[str, list[int]] = collections.defaultdict(list)
    fired_at: dict[str, list[float]] = collections.defaultdict(list)
    for r in receiver.requests:
        if r.path == path:
            by_id[r.task_id].append(int(r.headers.get("X-Httpqueue-Attempt", "0")))
            fired_at[r.task_id].append(r.at)
    lost = sorted(expected - set(by_id))
    duplicated = {i: attempts for i, attempts in by_id.items() if len(attempts) > 1}
    late = [i for i, at in load.deleted.items() if any(t > at for t in fired_at.get(i, []))]
    return Tally(len(load.acked), lost, duplicated, late)


def assert_duplicates_explained(tally: Tally, bound: int) -> None:
    """Duplicates only in the documented window: the same id again with a higher attempt number."""
    assert len(tally.duplicated) <= bound, tally.duplicated
    for attempts in tally.duplicated.values():
        assert len(set(attempts)) == len(attempts), f"same attempt number twice: {attempts}"
