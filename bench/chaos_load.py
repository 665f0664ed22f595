"""The chaos soak's clients: paced creates through nginx, each with its own Idempotency-Key, and some deletes.

A create is re-sent with the same key and body after any error, timeout or 5xx
until it is acknowledged (201, or 200 for a replay) or the clients give up at
the end of the run; what was acknowledged is what the soak holds the service
to. A share of the acknowledged tasks is deleted while still pending; a delete
is re-sent after errors until it gets an answer, and only a 200 counts (its
send time is kept: nothing may arrive after it).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import heapq
import random
import threading
import time
import typing as t
import uuid

import requests

DELAYS = (1.0, 20.0)
"""Seconds from create to due: spread so that tasks come due during kills."""

RETRY = 10
"""Each task's ``retry``: attempts lost to a kill must not exhaust it."""

TIMEOUT = 10.0
"""Seconds a client waits for one answer before it re-sends."""


@dataclasses.dataclass
class Tally:
    """What the clients did and what the service acknowledged."""

    acked: dict[str, str] = dataclasses.field(default_factory=dict)  # Idempotency-Key -> task id
    deleted: dict[str, float] = dataclasses.field(default_factory=dict)  # task id -> send time of the delete answered 200
    delete_refused: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    statuses: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    resent_creates: int = 0
    resent_deletes: int = 0
    given_up_creates: list[str] = dataclasses.field(default_factory=list)
    given_up_deletes: int = 0


class Clients:
    """Creates at ``rate``/s for as long as :meth:`run` is told, deletes ``delete_share`` of them."""

    def __init__(self, url: str, callback: str, rate: float, delete_share: float = 0.1,
                 threads: int = 64) -> None:
        self.url = url
        self.callback = callback
        self.rate = rate
        self.delete_share = delete_share
        self.tally = Tally()
        self.lock = threading.Lock()
        self.give_up = threading.Event()  # set at the end: in-flight retries stop
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="chaos-client")
        self.local = threading.local()
        self.deletes: list[tuple[float, str]] = []  # heap of (when, task id)
        self.deletes_ready = threading.Condition()
        self.in_flight = 0

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def run(self, stop: threading.Event) -> None:
        """Pace creates until ``stop`` is set (in this thread); deletes go out from a thread of their own."""
        deleter = threading.Thread(target=self._delete_loop, name="chaos-deletes", daemon=True)
        deleter.start()
        start, n = time.monotonic(), 0
        while not stop.is_set():
            n += 1
            with self.lock:
                self.in_flight += 1
            self.pool.submit(self._create, uuid.uuid4().hex)
            stop.wait(max(0.0, n / self.rate - (time.monotonic() - start)))

    def pending(self) -> int:
        """Creates not yet acknowledged nor given up."""
        with self.lock:
            return self.in_flight

    def close(self, grace: float) -> None:
        """Let unacknowledged creates keep trying for ``grace`` seconds, then give up and stop the threads."""
        deadline = time.monotonic() + grace
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.give_up.set()
        with self.deletes_ready:
            self.deletes_ready.notify_all()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stop at once: retries end at their next turn, queued requests are dropped."""
        self.give_up.set()
        with self.deletes_ready:
            self.deletes_ready.notify_all()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _create(self, key: str) -> None:
        delay = round(random.uniform(*DELAYS), 3)
        body = {"topic": "chaos", "delay": delay, "retry": RETRY,
                "callback": self.callback, "content": {"key": key}}
        try:
            for attempt in range(1_000_000):
                if attempt:
                    with self.lock:
                        self.tally.resent_creates += 1
                    time.sleep(min(2.0, 0.1 * 2 ** min(attempt, 5)) * random.uniform(0.5, 1.0))
                if self.give_up.is_set():
                    with self.lock:
                        self.tally.given_up_creates.append(key)
                    return
                answer = self._send("POST", "/v1/tasks", json=body, headers={"Idempotency-Key": key})
                if answer is not None and answer.status_code in (200, 201):
                    self._acked(key, answer.json()["id"], delay)
                    return
                if answer is not None and answer.status_code < 500:
                    raise RuntimeError(f"create answered {answer.status_code}: {answer.text[:300]}")
        finally:
            with self.lock:
                self.in_flight -= 1

    def _acked(self, key: str, task_id: str, delay: float) -> None:
        with self.lock:
            self.tally.acked[key] = task_id
        if delay >= 3.0 and random.random() < self.delete_share:
            when = time.monotonic() + random.uniform(0.2, delay - 2.0)
            with self.deletes_ready:
                heapq.heappush(self.deletes, (when, task_id))
                self.deletes_ready.notify()

    def _send(self, method: str, path: str, **kwargs: t.Any) -> requests.Response | None:
        """One request through nginx; ``None`` after a connection error or timeout. Counts the outcome."""
        try:
            answer = self.session().request(method, self.url + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            with self.lock:
                self.tally.statuses[f"{method} {type(exc).__name__}"] += 1
            return None
        with self.lock:
            self.tally.statuses[f"{method} {answer.status_code}"] += 1
        return answer

    def _delete_loop(self) -> None:
        while not self.give_up.is_set():
            with self.deletes_ready:
                while not self.give_up.is_set() and (not self.deletes or self.deletes[0][0] > time.monotonic()):
                    wait = self.deletes[0][0] - time.monotonic() if self.deletes else 1.0
                    self.deletes_ready.wait(max(0.01, min(wait, 1.0)))
                if self.give_up.is_set():
                    return
                _, task_id = heapq.heappop(self.deletes)
            try:
                self.pool.submit(self._delete, task_id)
            except RuntimeError:  # the pool shut down
                return

    def _delete(self, task_id: str) -> None:
        for attempt in range(1_000_000):
            if attempt:
                with self.lock:
                    self.tally.resent_deletes += 1
                time.sleep(min(2.0, 0.1 * 2 ** min(attempt, 5)) * random.uniform(0.5, 1.0))
            if self.give_up.is_set():
                with self.lock:
                    self.tally.given_up_deletes += 1
                return
            sent = time.time()
            answer = self._send("DELETE", f"/v1/tasks/{task_id}")
            if answer is None or answer.status_code >= 500:
                continue
            with self.lock:
                if answer.status_code == 200:
                    self.tally.deleted[task_id] = sent
                else:  # 409: its attempt had started (or it was delivered already)
                    self.tally.delete_refused[answer.status_code] += 1
            return
