"""Many nodes behind a real nginx: 3 API nodes and 3 workers on one Redis, one of each killed -9 and restarted.

Clients go through nginx (``docker/nginx.conf``) and re-send a create with the
same Idempotency-Key after any error. Checked after the faults: every
acknowledged create was delivered, no key made two tasks, a cron schedule
ticked once per second without a gap, and a topic's concurrency limit held
across the workers. The nginx configuration's own promise (a keyless POST is
never sent to a second node once sent, a keyed one is) is checked on its own.
"""
from __future__ import annotations

import collections
import concurrent.futures
import random
import socket
import threading
import time
import typing as t
import uuid
from pathlib import Path

import pytest
import requests

from httpqueue.embedded import free_port
from tests.support.faults import Service
from tests.support.nginx import Nginx
from tests.support.processes import Proc, start_api, wait_until
from tests.support.receiver import Answer, Receiver

pytestmark = pytest.mark.faults

NODES = 3
LOAD_SECONDS = 9.0
RATE = 25.0
"""Creates per second through nginx (two client threads)."""

LIMIT = 2
"""Concurrency limit of the limited topic; its receiver holds each callback :data:`HOLD` seconds."""
HOLD = 0.4


class Cluster:
    """Redis, 3 API nodes and 3 workers of one :class:`Service`, nginx in front."""

    def __init__(self, tmp: Path) -> None:
        self.service = Service(tmp)
        self.ports = [free_port() for _ in range(NODES)]
        self.apis: dict[int, Proc] = {}
        self.workers: dict[str, Proc] = {}
        self.nginx = Nginx(tmp / "nginx", self.ports)

    def start(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(2 * NODES) as pool:
            apis = {i: pool.submit(self.start_api, i) for i in range(NODES)}
            workers = [pool.submit(self.start_worker, f"node-worker-{i}") for i in range(NODES)]
            for future in [*apis.values(), *workers]:
                future.result()
        self.nginx.start()

    def start_api(self, i: int) -> Proc:
        proc = start_api(self.service.env, self.ports[i], name=f"node-api-{i}", workers=1)
        self.apis[i] = proc
        return proc

    def start_worker(self, name: str) -> Proc:
        proc = self.service.start_worker(name)
        self.workers[name] = proc
        return proc

    def stop(self) -> None:
        self.nginx.stop()
        for proc in self.apis.values():
            proc.stop()
        self.service.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> t.Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def receiver() -> t.Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


class Clients:
    """Creates through nginx, each re-sent with its Idempotency-Key after an error until acknowledged."""

    def __init__(self, url: str, callback: str) -> None:
        self.url = url
        self.callback = callback
        self.acked: dict[str, str] = {}  # key -> task id
        self.resent = 0
        self.given_up: list[str] = []
        self.lock = threading.Lock()

    def create(self, session: requests.Session, key: str) -> None:
        body = {"topic": "many", "delay": round(random.uniform(0.2, 2.0), 3), "retry": 5,
                "callback": self.callback, "content": {"key": key}}
        for attempt in range(20):  # bounded: the faults last a few seconds
            try:
                response = session.post(f"{self.url}/v1/tasks", json=body, timeout=10,
                                        headers={"Idempotency-Key": key})
                if response.status_code in (200, 201):
                    with self.lock:
                        self.acked[key] = response.json()["id"]
                    return
                assert response.status_code >= 500, response.text  # a 4xx would be this test's mistake
            except requests.RequestException:
                pass
            with self.lock:
                self.resent += 1
            time.sleep(0.1 * (attempt + 1))
        self.given_up.append(key)

    def run(self, seconds: float, rate: float, stop: threading.Event) -> None:
        session = requests.Session()
        start, n = time.monotonic(), 0
        while time.monotonic() - start < seconds and not stop.is_set():
            n += 1
            self.create(session, uuid.uuid4().hex)
            time.sleep(max(0.0, n / rate - (time.monotonic() - start)))


def concurrent_at_most(arrivals: list[float], hold: float) -> int:
    """Most callbacks in flight at once, each held ``hold`` s after it arrived (a little less, for jitter)."""
    arrivals = sorted(arrivals)
    window = hold * 0.8
    return max((sum(1 for b in arrivals if a <= b < a + window) for a in arrivals), default=0)


def test_three_api_nodes_and_three_workers_behind_nginx_survive_kill_9(
        cluster: Cluster, receiver: Receiver) -> None:
    url = cluster.nginx.url
    receiver.default("/many", Answer(delay=0.02))
    receiver.default("/limited", Answer(delay=HOLD))
    receiver.default("/cron", Answer())
    assert requests.patch(f"{url}/v1/topics/limited", json={"concurrency": LIMIT}, timeout=10).ok
    schedule = requests.post(f"{url}/v1/schedules", timeout=10, json={
        "id": "many-cron", "cron": "* * * * * *", "task": {"topic": "cron", "callback": receiver.url("/cron")}})
    assert schedule.status_code == 201, schedule.text
    limited = [requests.post(f"{url}/v1/tasks", timeout=10, json={
        "topic": "limited", "delay": 1.0, "callback": receiver.url("/limited"), "content": n}).json()["id"]
        for n in range(12)]

    # a create re-sent to another node with its key finds the first node's task
    twice = [requests.post(f"http://127.0.0.1:{port}/v1/tasks", timeout=10, headers={"Idempotency-Key": "twice"},
                           json={"topic": "many", "delay": 0.5, "callback": receiver.url("/many"),
                                 "content": {"key": "twice"}}) for port in (cluster.ports[0], cluster.ports[2])]
    assert [r.status_code for r in twice] == [201, 200] and twice[0].json()["id"] == twice[1].json()["id"]

    clients = Clients(url, receiver.url("/many"))
    clients.acked["twice"] = twice[0].json()["id"]
    stop = threading.Event()
    threads = [threading.Thread(target=clients.run, args=(LOAD_SECONDS, RATE / 2, stop), daemon=True)
               for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(2.5)  # faults in the middle of the load, whatever the requests are doing
    cluster.apis[1].kill9()
    cluster.workers["node-worker-1"].kill9()
    cluster.start_api(1)  # the same port: nginx sends to it again once it answers
    cluster.start_worker("node-worker-1")  # the same name, a new incarnation
    for thread in threads:
        thread.join(timeout=LOAD_SECONDS + 60)
    stop.set()
    assert requests.delete(f"{url}/v1/schedules/many-cron", timeout=10).status_code == 200

    assert not clients.given_up and len(clients.acked) >= 0.5 * RATE * LOAD_SECONDS  # half: a loaded box
    expected = set(clients.acked.values())

    def delivered() -> set[str]:
        return {r.task_id for r in receiver.requests if r.path == "/many"}

    wait_until(lambda: expected <= delivered(), 40, "every acknowledged create delivered", interval=0.2)
    wait_until(lambda: set(limited) <= {r.task_id for r in receiver.requests if r.path == "/limited"}, 20,
               "the limited topic's tasks delivered", interval=0.2)

    tasks_of_key: dict[str, set[str]] = collections.defaultdict(set)
    for r in receiver.requests:
        if r.path == "/many":
            tasks_of_key[r.json["content"]["key"]].add(r.task_id)
    made_two = {k: ids for k, ids in tasks_of_key.items() if len(ids) > 1}
    assert not made_two, made_two  # a re-sent create found its task, through any node
    assert set(tasks_of_key) == set(clients.acked)

    ticks = collections.Counter(r.task_id for r in receiver.requests if r.path == "/cron")
    tick_s = sorted(int(task_id.split("@")[1]) // 1000 for task_id in ticks)
    assert len(tick_s) >= LOAD_SECONDS - 2 and tick_s == list(range(tick_s[0], tick_s[-1] + 1)), tick_s
    for task_id in ticks:  # once per tick, but for the documented duplicate (a higher attempt number)
        attempts = [r.headers.get("X-Httpqueue-Attempt") for r in receiver.requests if r.task_id == task_id]
        assert len(set(attempts)) == len(attempts), (task_id, attempts)

    arrivals = [r.at for r in receiver.requests if r.path == "/limited"]
    assert concurrent_at_most(arrivals, HOLD) <= LIMIT
    passed_on = cluster.nginx.upstream_errors()  # requests nginx sent to the next node after the kill
    print(f"{len(clients.acked)} creates through nginx, {passed_on} passed to the next node by nginx, "
          f"{clients.resent} re-sent by the clients, {len(tick_s)} cron ticks")


def test_nginx_retries_a_sent_post_on_another_node_only_with_an_idempotency_key(tmp_path: Path) -> None:
    """Two upstreams that read the request and drop the connection: a keyless POST reaches one, a keyed one both."""
    dropping = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    hits: collections.Counter[int] = collections.Counter()
    done = threading.Event()

    def serve(server: socket.socket) -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                if conn.recv(65536):
                    hits[server.getsockname()[1]] += 1
            except OSError:
                pass
            conn.close()  # the request was sent, no answer: a node killed mid-request

    for server in dropping:
        threading.Thread(target=serve, args=(server,), daemon=True).start()
    proxy = Nginx(tmp_path / "nginx", [s.getsockname()[1] for s in dropping], options="max_fails=0")
    try:
        proxy.start()
        keyless = requests.post(f"{proxy.url}/v1/tasks", json={"a": 1}, timeout=10)
        assert keyless.status_code == 502 and sum(hits.values()) == 1
        hits.clear()
        keyed = requests.post(f"{proxy.url}/v1/tasks", json={"a": 1}, headers={"Idempotency-Key": "k1"},
                              timeout=10)
        assert keyed.status_code == 502 and sum(hits.values()) == 2 and len(hits) == 2
        hits.clear()
        too_large = requests.post(f"{proxy.url}/v1/tasks", data=b"x" * (1_048_576 + 1), timeout=10)
        assert too_large.status_code == 413 and too_large.json()["code"] == 413 and not hits
    finally:
        done.set()
        proxy.stop()
        for server in dropping:
            server.close()

