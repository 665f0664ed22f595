"""The receiver examples of ``docs/receiver.rst`` run as written, verify, dedupe, and stay under 15 lines."""
from __future__ import annotations

import datetime
import json
import re
import typing as t
import warnings
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from httpqueue.delivery.signing import new_secret

DOC = Path(__file__).resolve().parents[2] / "docs" / "receiver.rst"


def examples() -> dict[str, str]:
    """The page's Python blocks, by the section they are in (the first block of each)."""
    found: dict[str, str] = {}
    for section, body in re.findall(r"\n([^\n]+)\n-+\n(.*?)(?=\n[^\n]+\n-+\n|\Z)", DOC.read_text(), re.S):
        block = re.search(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", body)
        if block and section not in found:
            found[section] = "\n".join(line[3:] for line in block.group(1).splitlines()).strip() + "\n"
    return found


def signed(secret: str, body: bytes, task_id: str) -> dict[str, str]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return {"webhook-id": task_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(task_id, now, body.decode()),
            "X-Httpqueue-Id": task_id, "X-Httpqueue-Attempt": "1", "Content-Type": "application/json"}


@pytest.mark.parametrize("framework", ["Flask", "FastAPI"])
def test_the_documented_receiver_verifies_and_dedupes(framework: str, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    source = examples()[framework]
    assert len([line for line in source.splitlines() if line.strip()]) < 15, source
    secret = new_secret()
    monkeypatch.setenv("HTTPQUEUE_SIGNING_SECRETS", secret)
    monkeypatch.delenv("HTTPQUEUE_RECEIVER_REDIS_URL", raising=False)
    namespace: dict[str, t.Any] = {"__name__": "docs_example"}
    exec(compile(source, f"{DOC}:{framework}", "exec"), namespace)  # noqa: S102 - our own documentation
    post = poster(framework, namespace["app"])
    body = json.dumps({"id": "t-42", "topic": "order", "content": {"order": 4711}}).encode()
    answers = [post(body, signed(secret, body, "t-42")) for _ in range(2)]
    assert answers == [(200, {"code": 100})] * 2
    assert capsys.readouterr().out.count("task t-42 attempt 1 {'order': 4711}") == 1  # the repeat did not run it
    assert post(body, signed(new_secret(), body, "t-43"))[0] == 401


def poster(framework: str, app: t.Any) -> t.Callable[[bytes, dict[str, str]], tuple[int, t.Any]]:
    """``post(body, headers)`` to the app's ``/hooks/order``: (status, JSON answer)."""
    if framework == "Flask":
        flask_client = app.test_client()

        def post_flask(body: bytes, headers: dict[str, str]) -> tuple[int, t.Any]:
            answer = flask_client.post("/hooks/order", data=body, headers=headers)
            return answer.status_code, answer.json
        return post_flask
    with warnings.catch_warnings():  # starlette's test client says httpx will be replaced; it works today
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    asgi_client = TestClient(app)

    def post_asgi(body: bytes, headers: dict[str, str]) -> tuple[int, t.Any]:
        answer = asgi_client.post("/hooks/order", content=body, headers=headers)
        return answer.status_code, answer.json()
    return post_asgi
