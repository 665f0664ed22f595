"""``docs/client.rst``'s quick start runs against a real API, and ``docs/cli.rst``'s exit code table is the code's."""
from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest

from httpqueue.operator_cli import ExitCode
from tests.client.conftest import TOKEN, Api

DOCS = Path(__file__).resolve().parents[2] / "docs"
LOOPBACK = "http://127.0.0.1:9/hooks/remind"
"""Stands for the examples' shop.example URL (the suite's API calls back loopback only)."""


def python_blocks(page: str) -> list[str]:
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", (DOCS / page).read_text())
    return ["\n".join(line[3:] for line in block.splitlines()).strip() + "\n" for block in blocks]


@pytest.mark.parametrize("index", [0, 1])
def test_the_client_quick_start_runs(index: int, client_api: Api, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HTTPQUEUE_URL", client_api.url)
    monkeypatch.setenv("HTTPQUEUE_TOKEN", TOKEN)
    source = python_blocks("client.rst")[index].replace("https://shop.example/hooks/remind", LOOPBACK)
    namespace: dict[str, t.Any] = {"__name__": "docs_example"}
    exec(compile(source, f"client.rst block {index}", "exec"), namespace)  # noqa: S102 - our own documentation
    assert "scheduled" in capsys.readouterr().out


def test_the_documented_exit_codes_are_the_commands_own() -> None:
    table = re.search(r"Exit codes\n-+\n\n(.*?)\n\n", (DOCS / "cli.rst").read_text(), re.S)
    assert table
    rows = re.findall(r"^(\d+)\s+(\w+(?: \w+)?)\s{2,}", table.group(1), re.M)
    assert {int(code): name.replace(" ", "_").upper() for code, name in rows} == \
        {code.value: code.name for code in ExitCode}
