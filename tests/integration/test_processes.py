"""The commands people run: the gunicorn API, ``celery -A httpqueue worker``, Redis going away.

Both API servers side by side are in ``test_servers.py``.
"""
from __future__ import annotations

import sys
import typing as t

import redis
import requests

from httpqueue.config import Settings
from httpqueue.embedded import EmbeddedRedis, free_port
from httpqueue.store.keys import Keys
from tests.support.processes import Proc, start_api, wait_until
from tests.support.receiver import Receiver


def test_celery_dash_a_httpqueue_worker_delivers(env: dict[str, str], settings: Settings, client: t.Any,
                                                 receiver: Receiver, rclient: redis.Redis, topic: str) -> None:
    """Plain ``celery -A httpqueue worker`` finds the Celery app, runs the promoter and delivers."""
    proc = Proc([sys.executable, "-m", "celery", "-A", "httpqueue", "worker", "-n", "plain@localhost",
                 "--pool", "threads", "-c", "4", "-Q", "httpqueue", "--without-mingle", "--without-gossip"],
                env, "celery-plain")
    try:
        heartbeat = Keys(settings.key_prefix).worker_heartbeat("plain@localhost")
        wait_until(lambda: not proc.alive() or rclient.exists(heartbeat), 30, "plain worker")
        assert proc.alive(), proc.output()[-2000:]
        created = client.post("/create", json={"topic": topic, "delay": 3.0, "retry": 0,
                                                "callback": receiver.url("/plain")}).get_json()
        receiver.wait_task(created["id"], timeout=15)
    finally:
        proc.stop()


def test_gunicorn_api_serves_the_seed_api(env: dict[str, str], receiver: Receiver, topic: str,
                                          worker: t.Any) -> None:
    port = free_port()
    api = start_api(env, port, server="gunicorn")
    try:
        base = f"http://127.0.0.1:{port}"
        created = requests.post(f"{base}/create", json={"topic": topic, "delay": 0.1, "retry": 0,
                                                        "callback": receiver.url("/gunicorn"), "content": "hi"})
        assert created.status_code == 200
        task_id = created.json()["id"]
        receiver.wait_task(task_id)
        bad = requests.post(f"{base}/create", data="nope")
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
        assert requests.get(f"{base}/ready").json() == {"status": "ready"}
        wait_until(lambda: requests.post(f"{base}/query", json={"id": task_id}).json()["state"] == "succeeded",
                   10, "succeeded")
    finally:
        api.stop()


def test_redis_away_gives_503_and_the_api_recovers(tmp_path: t.Any) -> None:
    from httpqueue.api import create_app

    server = EmbeddedRedis(tmp_path / "r", port=free_port()).start()
    settings = Settings.load({"redis_url": server.url, "callback_allow": "127.0.0.0/8"}, environ={})
    client = create_app(settings).test_client()
    body = {"topic": "t", "delay": 3600, "retry": 0, "callback": "http://127.0.0.1:9/"}
    try:
        kept = client.post("/create", json=body).get_json()["id"]
        server.stop()
        for path, payload in (("/create", body), ("/query", {"id": kept}), ("/delete", {"id": kept})):
            response = client.post(path, json=payload)
            assert response.status_code == 503, path
            assert "unavailable" in response.get_json()["error"]
            assert response.headers["Retry-After"] == "1"
        assert client.get("/ready").status_code == 503
        assert client.get("/health").status_code == 200
        server.start()
        assert client.post("/create", json=body).status_code == 200
        assert client.post("/query", json={"id": kept}).get_json()["state"] == "scheduled"  # survived (AOF)
    finally:
        server.stop()
