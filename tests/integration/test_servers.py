"""``httpqueue api --server granian`` and ``--server gunicorn``: the same API, the same promises.

Each server runs as a real process with two workers: the original endpoints
and ``/v1`` answer, errors are JSON, ``/metrics`` sums both workers (the
multiprocess directory), and SIGTERM stops master and workers cleanly while a
request in flight still gets its answer.
"""
from __future__ import annotations

import gc
import re
import threading
import typing as t
from pathlib import Path
import psutil
import pytest
import requests

from httpqueue.api import wsgi
from httpqueue.config import API_SERVERS, ConfigError, Settings
from httpqueue.embedded import free_port
from tests.support.processes import start_api, wait_until


def created_total(text: str, topic: str) -> float | None:
    match = re.search(rf'^httpqueue_tasks_created_total\{{topic="{re.escape(topic)}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else None


@pytest.mark.parametrize("server", API_SERVERS)
def test_each_server_serves_the_api_and_stops_cleanly_on_sigterm(server: str, env: dict[str, str],
                                                                 topic: str) -> None:
    port = free_port()
    api = start_api(env, port, name=f"api-{server}", workers=2, server=server)
    base = f"http://127.0.0.1:{port}"
    task: dict[str, t.Any] = {"topic": topic, "delay": 3600, "retry": 0, "callback": "http://127.0.0.1:9/cb",
                              "content": "hi"}
    try:
        master = psutil.Process(api.pid)
        workers = wait_until(lambda: [p for p in [master.children(recursive=True)] if len(p) >= 2], 10,
                             "both workers")[0]
        # the original API; a new connection each time, so both workers answer some
        created = requests.post(f"{base}/create", json=task, timeout=5)
        assert created.status_code == 200, created.text
        assert created.headers["Server"].lower().startswith(server)
        task_id = created.json()["id"]
        query = requests.post(f"{base}/query", json={"id": task_id}, timeout=5).json()
        assert query["id"] == task_id and query["state"] == "scheduled" and query["content"] == "hi"
        # /v1
        v1 = requests.post(f"{base}/v1/tasks", json=task, timeout=5)
        assert v1.status_code == 201 and "id" in v1.json()
        assert requests.get(f"{base}/v1/tasks/{v1.json()['id']}", timeout=5).json()["topic"] == topic
        for _ in range(4):
            assert requests.post(f"{base}/create", json=task, timeout=5).status_code == 200
        # errors are JSON, whatever the server
        bad = requests.post(f"{base}/create", data="nope", timeout=5)
        assert bad.status_code == 400 and bad.headers["Content-Type"].startswith("application/json")
        assert "not valid JSON" in bad.json()["error"]
        assert requests.get(f"{base}/v1/tasks/nope-nope", timeout=5).status_code == 404
        # /metrics sums every worker of this server (6 creates, whichever worker took them)
        metrics = requests.get(f"{base}/metrics", timeout=5)
        assert metrics.status_code == 200 and created_total(metrics.text, topic) == 6
        # SIGTERM with a request in flight: it is answered, then master and workers exit 0
        batch = {"tasks": [dict(task, content=n) for n in range(1000)]}
        answers: list[int] = []
        sender = threading.Thread(target=lambda: answers.append(
            requests.post(f"{base}/v1/tasks/batch", json=batch, timeout=15).status_code))
        sender.start()
        threading.Event().wait(0.05)
        api.process.terminate()
        assert api.process.wait(timeout=15) == 0
        sender.join(timeout=15)
        assert answers == [200]
        gone, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, alive
        output = api.output()
        assert "Traceback" not in output and " 200 " not in output, output[-2000:]  # no access log
        assert task_id in output  # httpqueue's own log lines survive the server's logging set-up
    finally:
        api.stop()


def test_the_server_setting_and_the_default_worker_counts() -> None:
    assert Settings.load({}, environ={}).api_server == "granian"
    assert Settings.load({}, environ={"HTTPQUEUE_API_SERVER": "gunicorn"}).api_server == "gunicorn"
    with pytest.raises(ConfigError, match="api_server"):
        Settings.load({"api_server": "uwsgi"}, environ={})
    assert wsgi.default_workers("granian", 2) == 2 and wsgi.default_workers("gunicorn", 2) == 5
    assert wsgi.granian_bind(":2356") == {"address": "0.0.0.0", "port": 2356}
    assert wsgi.granian_bind("127.0.0.1:80") == {"address": "127.0.0.1", "port": 80}
    assert wsgi.granian_bind("[::1]:8080") == {"address": "::1", "port": 8080}
    assert str(wsgi.granian_bind("unix:/tmp/hq.sock")["uds"]) == "/tmp/hq.sock"


def test_the_wsgi_factory_builds_the_app_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                              settings: Settings) -> None:
    from httpqueue import context, logs

    monkeypatch.setattr(context, "_current", None)
    monkeypatch.setattr(context, "_settings", settings)
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)  # the suite's logging stays as it is
    try:
        app = wsgi.load(wsgi.APP)
        # what the start made is out of the collector's scans: the app, its schemas, the modules
        assert gc.get_freeze_count() > 10_000
        assert app.test_client().get("/health").status_code == 200
    finally:
        gc.unfreeze()  # the rest of the suite collects as before


@pytest.mark.parametrize("server", API_SERVERS)
def test_a_killed_worker_is_replaced_and_a_killed_master_takes_its_workers_along(
        server: str, env: dict[str, str], tmp_path: Path) -> None:
    """A dead worker: replaced, its live gauges dropped (gunicorn's ``child_exit``, granian's respawn hook)."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    api = start_api({**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, port, name=f"api-kill-{server}",
                    workers=2, server=server)
    base = f"http://127.0.0.1:{port}"
    try:
        master = psutil.Process(api.pid)
        first = wait_until(lambda: [p for p in [master.children()] if len(p) == 2], 10, "both workers")[0]
        live_gauge = metrics_dir / f"gauge_livesum_{first[0].pid}.db"  # as a worker's live gauge would leave it
        live_gauge.write_bytes(b"")
        first[0].kill()
        workers = wait_until(lambda: [p for p in [master.children()] if len(p) == 2 and first[0] not in p], 15,
                             "a new worker")[0]
        assert requests.get(f"{base}/health", timeout=5).status_code == 200
        wait_until(lambda: not live_gauge.exists(), 5, "the dead worker's live gauge file removed")
        master.kill()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"orphaned workers still running: {alive}"
    finally:
        api.kill9()
        api.stop()
