"""The dashboard's export panel in a real browser: per sink lag, pending and drops of ``GET /v1/export``, a sink
that lost events in red. Events are written by the API's own store calls (export on, a small bound) and read by
real consumer-group readers."""
from __future__ import annotations

import shutil
import typing as t
from pathlib import Path

import pytest
import redis
import requests

from httpqueue.embedded import free_port
from httpqueue.export.stream import GroupReader
from httpqueue.store.keys import Keys
from tests.support.processes import ARTIFACTS, start_api
from tests.support.store import drop_prefix, fresh_prefix

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BOUND = 20

playwright = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def create(url: str, count: int) -> None:
    tasks = [{"topic": "export-panel", "callback": "http://127.0.0.1:9/never", "delay": 3600}] * count
    response = requests.post(f"{url}/v1/tasks/batch", json={"tasks": tasks}, timeout=10)
    assert response.status_code < 300, response.text


def test_export_panel_shows_each_sink_and_marks_the_one_that_lost_events(env: dict[str, str],
                                                                          rclient: redis.Redis) -> None:
    keys = Keys(fresh_prefix(), 1)
    port = free_port()
    api = start_api({**env, "HTTPQUEUE_KEY_PREFIX": keys.prefix, "HTTPQUEUE_SHARDS": "1",
                     "HTTPQUEUE_EXPORT_MAX_EVENTS": str(BOUND)}, port, name="api-dashboard-export")
    url = f"http://127.0.0.1:{port}"
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{url}/dashboard")
            page.wait_for_function("document.body.dataset.loaded === '1'", timeout=15_000)
            assert "no exporter has read yet" in page.inner_text("#export-state")
            assert page.locator("#export").is_hidden()

            steady = GroupReader(rclient, keys, "export:steady", "exporter-1")
            behind = GroupReader(rclient, keys, "export:behind", "exporter-2")
            steady.ensure_groups()
            behind.ensure_groups()
            for _ in range(15):  # the steady sink keeps up batch by batch; the other reads nothing
                create(url, 10)
                steady.ack(steady.read_new(100))
            behind.read_new(5)  # far behind: most of what it never read was trimmed; 5 taken, none acknowledged
            page.reload()
            page.wait_for_selector('#export tr[data-sink="behind"]', timeout=15_000)
            late, fine = '#export tr[data-sink="behind"]', '#export tr[data-sink="steady"]'
            assert "bad" in (page.get_attribute(late, "class") or "")
            assert "bad" not in (page.get_attribute(fine, "class") or "")
            assert int(page.inner_text(f'{late} td[data-col="dropped"]').replace(",", "")) > 0
            assert page.inner_text(f'{late} td[data-col="pending"]') == "5"
            assert page.inner_text(f'{fine} td[data-col="dropped"]') == "0"
            assert page.inner_text(f'{fine} td[data-col="lag"]') == f"0 / {BOUND}"
            assert page.inner_text(f'{fine} td[data-col="consumers"]') == "exporter-1"
            assert page.inner_text(f'{fine} td[data-col="last"]').endswith(" s ago")
            assert page.inner_text(f'{late} td[data-col="last"]') == "never"  # it never acknowledged
            assert f"at most {BOUND} events" in page.inner_text("#export-state")
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#export-panel").screenshot(path=str(ARTIFACTS / "dashboard-export.png"))
            browser.close()
    finally:
        api.stop()
        drop_prefix(rclient, keys)
