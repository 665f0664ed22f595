"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a running service."""
from __future__ import annotations

import shutil
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
