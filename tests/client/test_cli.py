"""The operator commands (``httpqueue tasks|topics|schedules|nodes``) through click's runner against a real API."""
from __future__ import annotations

import datetime
import json
import typing as t
import uuid

import pytest
from click.testing import CliRunner, Result

from httpqueue.cli import main
from httpqueue.client import Client, State
from httpqueue.embedded import free_port
from httpqueue.operator_cli import ExitCode
from tests.client.conftest import TOKEN, Api
from tests.support.processes import wait_until
from tests.support.receiver import Answer, Receiver

NOWHERE = "http://127.0.0.1:9/never"


@pytest.fixture
def run(client_api: Api) -> t.Callable[..., Result]:
    """``httpqueue ARGS...`` with HTTPQUEUE_URL and HTTPQUEUE_TOKEN set for the test API."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        return runner.invoke(main, list(args), input=input,
                             env={"HTTPQUEUE_URL": client_api.url, "HTTPQUEUE_TOKEN": TOKEN, **(env or {})})
    return invoke


def as_json(result: Result) -> t.Any:
    assert result.exit_code == 0, (result.exit_code, result.output, result.stderr)
    return json.loads(result.stdout)


def test_tasks_create_get_ls_history_delete(run: t.Callable[..., Result], topic: str) -> None:
    created = as_json(run("tasks", "create", topic, NOWHERE, "--content", '{"order": 7}', "--delay", "3600",
                          "--header", "X-Tenant: acme", "--retry", "2", "--json"))
    assert (created["topic"], created["content"], created["state"]) == (topic, {"order": 7}, "scheduled")
    assert created["options"]["headers"] == {"X-Tenant": "acme"}
    shown = run("tasks", "get", created["id"])
    assert shown.exit_code == 0 and created["id"] in shown.stdout and "scheduled" in shown.stdout
    tomorrow = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).isoformat()
    assert run("tasks", "create", topic, NOWHERE, "--text", "plain", "--at", tomorrow).exit_code == 0
    listed = as_json(run("tasks", "ls", "--topic", topic, "--json"))
    assert len(listed) == 2 and {x["content"] for x in listed if isinstance(x["content"], str)} == {"plain"}
    table = run("tasks", "ls", "--topic", topic, "--limit", "1").stdout.splitlines()
    assert table[0].split() == ["ID", "TOPIC", "STATE", "DUE", "NEXT_ATTEMPT", "ATTEMPTS", "LAST_CODE"]
    assert len(table) == 2
    assert [e["event"] for e in as_json(run("tasks", "history", created["id"], "--json"))] == ["created"]
    deleted = as_json(run("tasks", "delete", created["id"], "--json"))
    assert (deleted["state"], deleted["previous_state"]) == ("deleted", "scheduled")


def test_exit_codes_scripts_can_branch_on(run: t.Callable[..., Result], topic: str) -> None:
    missing = run("tasks", "get", f"no-such-{uuid.uuid4()}")
    assert missing.exit_code == ExitCode.NOT_FOUND and "no task" in missing.stderr
    invalid = run("tasks", "create", topic, "not a url", "--delay", "-1", "--json")
    assert invalid.exit_code == ExitCode.INVALID
    assert set(json.loads(invalid.stderr)["fields"]) == {"callback", "delay"}
    task_id = f"cli-{uuid.uuid4()}"
    run("tasks", "create", topic, NOWHERE, "--text", "a", "--delay", "3600", "--id", task_id)
    conflict = run("tasks", "create", topic, NOWHERE, "--text", "b", "--delay", "3600", "--id", task_id)
    assert conflict.exit_code == ExitCode.CONFLICT
    assert run("topics", "ls", env={"HTTPQUEUE_TOKEN": "wrong"}).exit_code == ExitCode.UNAUTHORIZED
    nobody = run("nodes", "--url", f"http://127.0.0.1:{free_port()}")
    assert nobody.exit_code == ExitCode.UNAVAILABLE and "no answer" in nobody.stderr
    assert run("tasks", "create", topic, NOWHERE, "--content", "{oops").exit_code == ExitCode.USAGE
    assert run("tasks", "get", "x", "--url", "127.0.0.1:2356").exit_code == ExitCode.USAGE


def test_topics_pause_resume_set_purge(run: t.Callable[..., Result], topic: str) -> None:
    run("tasks", "create", topic, NOWHERE, "--delay", "3600")
    assert as_json(run("topics", "pause", topic, "--json"))["paused"] is True
    listed = {x["topic"]: x for x in as_json(run("topics", "ls", "--json"))}
    assert listed[topic]["paused"] is True and listed[topic]["counts"]["scheduled"] == 1
    assert as_json(run("topics", "resume", topic, "--json"))["paused"] is False
    limited = as_json(run("topics", "set", topic, "--rate-limit", "5", "--concurrency", "2", "--json"))
    assert (limited["rate_limit"], limited["concurrency"]) == (5, 2)
    cleared = as_json(run("topics", "set", topic, "--rate-limit", "none", "--json"))
    assert (cleared["rate_limit"], cleared["concurrency"]) == (None, 2)
    assert run("topics", "purge", topic, input="n\n").exit_code != 0  # asked, and refused
    assert as_json(run("topics", "purge", topic, "--yes", "--json")) == {"topic": topic, "count": 1}


def test_dead_letters_and_retry(run: t.Callable[..., Result], client_api: Api, receiver: Receiver, worker: t.Any,
                                topic: str) -> None:
    path = f"/{topic}"
    receiver.default(path, Answer({"code": 500}))
    ids = [as_json(run("tasks", "create", topic, receiver.url(path), "--delay", "0", "--json"))["id"]
           for _ in range(2)]
    with Client(client_api.url, token=TOKEN, environ={}) as hq:
        wait_until(lambda: all(hq.get(i).state is State.FAILED for i in ids), 20, "two dead letters")
    dead = run("topics", "dead-letters", topic)
    assert dead.exit_code == 0 and all(i in dead.stdout for i in ids)
    assert as_json(run("tasks", "retry", ids[0], "--json"))["state"] == "retrying"
    assert as_json(run("topics", "replay", topic, ids[1], "--json"))["count"] == 1
    assert run("topics", "dismiss", topic, "no-such-id").exit_code == ExitCode.NOT_FOUND


def test_schedules_and_nodes(run: t.Callable[..., Result], worker: t.Any, topic: str) -> None:
    made = as_json(run("schedules", "create", "0 9 * * 1-5", topic, NOWHERE, "--timezone", "Europe/Berlin",
                       "--content", '{"kind": "daily"}', "--json"))
    assert made["timezone"] == "Europe/Berlin" and made["task"]["content"] == {"kind": "daily"}
    assert made["id"] in run("schedules", "ls").stdout
    assert as_json(run("schedules", "pause", made["id"], "--json"))["paused"] is True
    assert as_json(run("schedules", "resume", made["id"], "--json"))["next_tick_ms"]
    assert run("schedules", "delete", made["id"]).exit_code == 0
    assert run("schedules", "get", made["id"]).exit_code == ExitCode.NOT_FOUND
    nodes = as_json(run("nodes", "--json"))
    assert {"api", "worker"} & {n["role"] for n in nodes}
    table = run("nodes").stdout.splitlines()
    assert table[0].split() == ["ROLE", "NAME", "HOST", "PID", "VERSION", "LOAD", "LAST_SEEN"]
