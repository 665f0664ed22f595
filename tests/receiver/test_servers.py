"""Receivers in real web servers (Flask under werkzeug's WSGI server, FastAPI and Starlette under uvicorn) getting real
signed callbacks from a running httpqueue (its own API and worker, with a signing secret).

Each handler's behaviour is chosen by the task's content, so one server plays
every case at once: a plain task, a handler that fails once (run again on the
retry), one that asks to slow down once, one that answers too late (httpqueue
times out and sends it again: the repeat is acknowledged without running the
handler a second time), and a receiver with the wrong secret (refused, never
run).
"""
from __future__ import annotations

import collections
import threading
import time
import typing as t
import uuid

import pytest
import redis
import uvicorn
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.routing import Route
from werkzeug.serving import make_server

from httpqueue.client import Client, Options, State, Task
from httpqueue.delivery.signing import new_secret
from httpqueue.embedded import EmbeddedRedis, free_port
from httpqueue.receiver import DONE, Callback, Receiver, RedisDedupStore, SlowDown
from httpqueue.receiver.asgi import callback, endpoint, install
from httpqueue.receiver.flask import callback_view
from tests.support.processes import settings_env, start_api, start_worker, wait_until
from tests.support import databases

SECRET = new_secret()

LATE = 1.6
"""Seconds the "late" handler takes: past the task's 1 s timeout, so httpqueue sends the task again."""


class Seen:
    """What the handlers ran: the attempts of each task id, and their callbacks."""

    def __init__(self) -> None:
        self.runs: dict[str, list[Callback]] = collections.defaultdict(list)
        self.lock = threading.Lock()

    def behave(self, cb: Callback) -> None:
        with self.lock:
            self.runs[cb.id].append(cb)
            first = len(self.runs[cb.id]) == 1
        mode = cb.content.get("mode") if isinstance(cb.content, dict) else None
        if mode == "fail-once" and first:
            raise RuntimeError("the handler fails on its first run")
        if mode == "slow-down-once" and first:
            raise SlowDown(1)
        if mode == "late":
            time.sleep(LATE)


@pytest.fixture(scope="module")
def signed_service(settings_overrides: dict[str, t.Any], redis_server: EmbeddedRedis) -> t.Iterator[Client]:
    """httpqueue (API + worker) signing with SECRET, on keys and a broker database of its own."""
    prefix = f"hqrecv{uuid.uuid4().hex[:6]}"
    env = settings_env({**settings_overrides, "key_prefix": prefix, "signing_secrets": SECRET,
                        "broker_url": databases.url(redis_server.url, databases.BrokerDb.RECEIVER_SERVERS)})
    worker = start_worker(env, "receiver-worker", redis.Redis.from_url(redis_server.url), prefix=prefix)
    port = free_port()
    api = start_api(env, port, name="receiver-api")
    try:
        with Client(f"http://127.0.0.1:{port}", environ={}) as hq:
            yield hq
    finally:
        api.stop()
        worker.stop()


def receivers(redis_server: EmbeddedRedis) -> tuple[Receiver, Receiver]:
    """The receiver of httpqueue's secret (handled ids in the suite's Redis) and one holding another secret."""
    dedup = RedisDedupStore(redis.Redis.from_url(redis_server.url), prefix=f"recv-{uuid.uuid4().hex[:8]}:")
    return Receiver([SECRET], dedup=dedup), Receiver([new_secret()])


def flask_app(seen: Seen, redis_server: EmbeddedRedis) -> Flask:
    receiver, stranger = receivers(redis_server)
    app = Flask("receiver-test")

    @app.post("/hook")
    @callback_view(receiver)
    def hook(cb: Callback) -> None:
        seen.behave(cb)

    @app.post("/stranger")
    @callback_view(stranger)
    def not_ours(cb: Callback) -> None:
        seen.behave(cb)

    return app


def fastapi_app(seen: Seen, redis_server: EmbeddedRedis) -> FastAPI:
    receiver, stranger = receivers(redis_server)
    app = FastAPI()
    install(app)

    @app.post("/hook")
    def hook(cb: Callback = Depends(callback(receiver))) -> dict[str, int]:
        seen.behave(cb)
        return DONE

    @app.post("/stranger")
    async def not_ours(cb: Callback = Depends(callback(stranger))) -> dict[str, int]:
        seen.behave(cb)
        return DONE

    return app


def starlette_app(seen: Seen, redis_server: EmbeddedRedis) -> Starlette:
    receiver, stranger = receivers(redis_server)
    return Starlette(routes=[Route("/hook", endpoint(receiver, seen.behave), methods=["POST"]),
                             Route("/stranger", endpoint(stranger, seen.behave), methods=["POST"])])


def serve_flask(app: Flask) -> tuple[str, t.Callable[[], None]]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=10)
    return f"http://127.0.0.1:{server.server_port}", stop


def serve_asgi(app: t.Any) -> tuple[str, t.Callable[[], None]]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 15, "uvicorn started")
    assert server.started

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
    return f"http://127.0.0.1:{port}", stop


@pytest.mark.parametrize("framework", ["flask", "fastapi", "starlette"])
def test_receiver_verifies_and_runs_each_task_once(framework: str, signed_service: Client,
                                                   redis_server: EmbeddedRedis) -> None:
    seen = Seen()
    if framework == "flask":
        url, stop = serve_flask(flask_app(seen, redis_server))
    else:
        url, stop = serve_asgi((fastapi_app if framework == "fastapi" else starlette_app)(seen, redis_server))
    hq, topic = signed_service, f"recv-{framework}-{uuid.uuid4().hex[:6]}"
    try:
        def create(mode: str, path: str = "/hook", **options: t.Any) -> Task:
            return hq.create(topic, url + path, {"mode": mode}, delay=0, retry=2, options=Options(**options))

        tasks = {mode: create(mode) for mode in ("plain", "fail-once", "slow-down-once")}
        tasks["late"] = create("late", timeout=1)
        # retries here too: uvicorn closes a connection after an application error (the fail-once handler's),
        # and a request that meets the closing connection fails its attempt (httpqueue never resends within one)
        tasks["stranger"] = hq.create(topic, url + "/stranger", {"mode": "plain"}, delay=0, retry=2)
        final = wait_final(hq, tasks)
    finally:
        stop()

    plain = seen.runs[tasks["plain"].id]
    assert [(c.id, c.topic, c.content, c.attempt) for c in plain] == [(tasks["plain"].id, topic, {"mode": "plain"}, 1)]
    assert final["plain"].state is State.SUCCEEDED
    # a failing handler leaves the task to httpqueue's retry, which runs it again
    assert [c.attempt for c in seen.runs[tasks["fail-once"].id]] == [1, 2]
    assert final["fail-once"].state is State.SUCCEEDED
    # slowing down is not a failure: the next try runs the handler again
    assert len(seen.runs[tasks["slow-down-once"].id]) == 2
    assert final["slow-down-once"].state is State.SUCCEEDED and final["slow-down-once"].throttled == 1
    # httpqueue timed out and sent the task again: acknowledged, not run twice
    assert len(seen.runs[tasks["late"].id]) == 1
    assert final["late"].state is State.SUCCEEDED and final["late"].attempts >= 2
    # the wrong secret: refused before the handler
    assert seen.runs[tasks["stranger"].id] == []
    assert final["stranger"].state is State.FAILED and final["stranger"].last_code == 401


def wait_final(hq: Client, tasks: t.Mapping[str, Task], timeout: float = 30) -> dict[str, Task]:
    """Poll until every task has succeeded or failed; their final documents."""
    def done() -> dict[str, Task] | None:
        now = {mode: hq.get(task.id) for mode, task in tasks.items()}
        return now if all(x.state in (State.SUCCEEDED, State.FAILED) for x in now.values()) else None
    return t.cast(dict[str, Task], wait_until(done, timeout, "every task final", interval=0.2))
