"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a running service."""
from __future__ import annotations

import shutil
import time
import typing as t
from pathlib import Path

import pytest
import requests

from httpqueue.embedded import free_port
from tests.support.processes import ARTIFACTS, start_api, wait_until
from tests.support.receiver import Answer, Receiver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "dashboard-test-token"

playwright = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def service(env: dict[str, str], worker: t.Any) -> t.Iterator[str]:
    port = free_port()
    api = start_api({**env, "HTTPQUEUE_API_TOKENS": TOKEN}, port, name="api-dashboard", workers=2)
    yield f"http://127.0.0.1:{port}"
    api.stop()


def call(method: str, url: str, **kwargs: t.Any) -> t.Any:
    response = requests.request(method, url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10, **kwargs)
    assert response.status_code < 400, response.text
    return response.json()


def test_dashboard_shows_the_numbers_and_its_buttons_work(service: str, receiver: Receiver, topic: str) -> None:
    ok, bad = f"/{topic}-ok", f"/{topic}-bad"
    receiver.default(bad, Answer(status=500, body={"code": 500}))
    made = lambda path, delay=0.1: call("POST", f"{service}/v1/tasks", json={  # noqa: E731
        "topic": topic, "delay": delay, "callback": receiver.url(path)})["id"]
    succeeded = [made(ok) for _ in range(3)]
    failed = [made(bad) for _ in range(2)]
    waiting = made(ok, delay=3600)
    state = lambda i: call("GET", f"{service}/v1/tasks/{i}")["state"]  # noqa: E731
    wait_until(lambda: all(state(i) == "succeeded" for i in succeeded) and all(state(i) == "failed" for i in failed),
               30, "tasks settled")

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{service}/dashboard")
        # the page says "loading..." until its first API call answers (401 without a token)
        page.wait_for_function("!document.querySelector('#status').innerText.includes('loading')", timeout=15_000)
        assert "401" in page.inner_text("#status") or "token" in page.inner_text("#status").lower()
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.wait_for_selector(f'#topics tr[data-topic="{topic}"]', timeout=15_000)

        row = f'#topics tr[data-topic="{topic}"]'
        cell = lambda col: page.inner_text(f'{row} td[data-col="{col}"]')  # noqa: E731
        assert (cell("succeeded"), cell("failed"), cell("scheduled")) == ("3", "2", "1")

        def totals_match() -> bool:  # the page refreshes every 5 s; compare with the API at the same moment
            totals = call("GET", f"{service}/v1/stats")["totals"]
            shown = {s: int(page.inner_text(f'[data-testid="total-{s}"]').replace(",", "")) for s in totals}
            return shown == totals
        wait_until(totals_match, 20, "total cards equal /v1/stats", interval=0.5)

        # retry a failed task from the failures table; its receiver now answers 100
        receiver.default(bad, Answer())
        page.click(f'#failures tr[data-task="{failed[0]}"] button.retry')
        wait_until(lambda: state(failed[0]) == "succeeded", 20, "retried task succeeded")

        # open the waiting task's detail and delete it
        page.fill("#task-id", waiting)
        page.click("#lookup button")
        page.wait_for_selector('#detail td[data-field="state"]:text("scheduled")')
        page.click("#detail button.delete")
        wait_until(lambda: state(waiting) == "deleted", 10, "deleted from the dashboard")
        page.wait_for_selector('#detail td[data-field="state"]:text("deleted")')
        page.wait_for_selector(f'{row} td[data-col="succeeded"]:text("4")', timeout=15_000)

        ARTIFACTS.mkdir(exist_ok=True)
        page.fill("#task-id", failed[1])
        page.click("#lookup button")
        page.wait_for_selector('#detail td[data-field="state"]:text("failed")')
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000  # docs/dashboard.png is a copy of it


def test_dashboard_says_when_no_worker_runs_and_marks_overdue_tasks(tmp_path: Path, receiver: Receiver,
                                                                     topic: str) -> None:
    """A Redis and an API of their own (the session's worker must not count), then a worker arrives."""
    import redis

    from httpqueue.embedded import EmbeddedRedis
    from tests.support.processes import settings_env, start_worker

    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    env = settings_env({"redis_url": server.url, "callback_allow": "127.0.0.0/8", "timer_horizon": 2.0,
                        "promoter_interval": 0.05, "lease": 4.0, "shards": 4, "worker_concurrency": 2})
    port = free_port()
    api = start_api(env, port, name="api-dashboard-alone")
    base, worker = f"http://127.0.0.1:{port}", None
    try:
        late = requests.post(f"{base}/v1/tasks", json={"topic": topic, "execute_at": time.time() - 30,
                                                       "callback": receiver.url(f"/{topic}")}, timeout=5).json()["id"]
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{base}/dashboard")
            banner = page.wait_for_selector('[data-testid="banner"]:visible', timeout=15_000)
            assert "no worker is running: tasks will not fire" in banner.inner_text()
            assert "1 overdue" in banner.inner_text()
            page.wait_for_selector('[data-testid="total-overdue"]:text("1")')
            page.fill("#task-id", late)
            page.click("#lookup button")
            page.wait_for_selector('#detail td[data-field="state"]:text("queued")')
            assert "overdue by" in page.inner_text('[data-testid="overdue-badge"]')
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-no-worker.png"), full_page=True)

            worker = start_worker(env, "worker-dashboard-alone", redis.Redis.from_url(server.url))
            receiver.wait_task(late, timeout=15)
            page.wait_for_selector('[data-testid="banner"]', state="hidden", timeout=15_000)
            page.wait_for_selector('[data-testid="total-overdue"]:text("0")', timeout=15_000)
            browser.close()
    finally:
        if worker is not None:
            worker.stop()
        api.stop()
        server.stop()
