"""The dashboard's nodes panel in a real browser: the live API processes and workers of ``GET /v1/nodes``."""
from __future__ import annotations

import shutil
import typing as t
from pathlib import Path

import pytest

from httpqueue.embedded import free_port
from tests.support.processes import ARTIFACTS, start_api

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

playwright = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def test_nodes_panel_lists_the_api_processes_and_the_worker(env: dict[str, str], worker: t.Any) -> None:
    port = free_port()
    api = start_api(env, port, name="api-dashboard-nodes", workers=2)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/dashboard")
            api_rows = f'#nodes tr[data-role="api"][data-name="127.0.0.1:{port}"]'
            # both serving processes of this API report in (the page refreshes every 5 s)
            page.wait_for_function(f"document.querySelectorAll('{api_rows}').length === 2", timeout=20_000)
            page.wait_for_selector('#nodes tr[data-role="worker"][data-name="worker-main@localhost"]', timeout=15_000)
            load = page.inner_text(f'{api_rows} >> nth=0 >> td[data-col="load"]')
            assert load.endswith("req/s")
            worker_load = page.inner_text('#nodes tr[data-role="worker"] >> nth=0 >> td[data-col="load"]')
            assert worker_load.endswith("in flight")
            assert "api" in page.inner_text("#node-counts") and "worker" in page.inner_text("#node-counts")
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#nodes").screenshot(path=str(ARTIFACTS / "dashboard-nodes.png"))
            browser.close()
    finally:
        api.stop()
