"""The final task events of delivery messages: recording never waits for their publisher.

In-process: the dispatcher is replaced by one that records what it is given
and can be made to hang, which is what the publisher thread must survive (a
publish that never returns once held every recording thread of a pool
process). The events' way to Flower through a real broker is covered by
tests/integration/test_flower.py.
"""
from __future__ import annotations

import threading
import time
import typing as t

import pytest

from httpqueue import events
from httpqueue.celery import app
from httpqueue.worker import tasks
from httpqueue.worker.attempts import message_report
from tests.support.processes import wait_until


class Dispatcher:
    """Stands in for Celery's ``EventDispatcher``: keeps the events; ``hang`` makes ``send`` block until released."""

    def __init__(self, hostname: str, hang: threading.Event | None = None) -> None:
        self.hostname = hostname
        self.hang = hang
        self.sent: list[tuple[str, dict[str, t.Any]]] = []
        self.connection = None

    def send(self, type_: str, **fields: t.Any) -> None:
        if self.hang is not None:
            self.hang.wait(30)
        self.sent.append((type_, fields))

    def flush(self, errors: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def warnings() -> t.Iterator[list[dict[str, t.Any]]]:
    seen: list[dict[str, t.Any]] = []

    def listen(name: str, fields: t.Mapping[str, t.Any]) -> None:
        if name == "task_event_failed":
            seen.append(dict(fields))
    events.subscribe(listen)
    yield seen
    events.unsubscribe(listen)


def test_a_hung_publish_never_holds_recording_and_a_new_publisher_takes_over(
        monkeypatch: pytest.MonkeyPatch, warnings: list[dict[str, t.Any]]) -> None:
    monkeypatch.setattr(tasks, "EVENTS_STUCK_AFTER", 0.5)
    monkeypatch.setitem(app.conf, "worker_send_task_events", True)
    released = threading.Event()
    made: list[Dispatcher] = []

    def dispatcher(*args: t.Any, hostname: str = "", **kwargs: t.Any) -> Dispatcher:
        made.append(Dispatcher(hostname, hang=released if not made else None))  # the first one hangs
        return made[-1]

    monkeypatch.setattr(app.events, "Dispatcher", dispatcher)
    monkeypatch.setattr(app, "connection_for_write", lambda: None)
    sender = tasks.MessageEvents(app)
    report = message_report(1, [], [], [])
    try:
        sender.succeeded(tasks.Message("m1", "w@h", time.monotonic()), report)
        wait_until(lambda: made and sender._busy_since, 5, "the first publish under way (and hanging)")
        began = time.monotonic()
        for n in range(2, 40):  # recording threads go on while the publish hangs
            sender.succeeded(tasks.Message(f"m{n}", "w@h", time.monotonic()), report)
        assert time.monotonic() - began < 0.2
        time.sleep(0.6)  # past EVENTS_STUCK_AFTER: the next event replaces the publisher
        sender.succeeded(tasks.Message("m40", "w@h", time.monotonic()), report)
        wait_until(lambda: len(made) == 2 and any(f["uuid"] == "m40" for _, f in made[1].sent), 5,
                   "the new publisher sends the events")
        sent = [f["uuid"] for _, f in made[1].sent]
        assert set(sent) >= {f"m{n}" for n in range(2, 41)}
        assert [w for w in warnings if w.get("event") == "publish" and "send" in w.get("stack", "")]
    finally:
        released.set()
    time.sleep(0.1)  # the first publisher returns, sees it was given up and ends without publishing more
    assert [f["uuid"] for _, f in made[0].sent] == ["m1"]


def test_events_beyond_the_bound_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch,
                                                          warnings: list[dict[str, t.Any]]) -> None:
    monkeypatch.setattr(tasks, "EVENTS_MAX_WAITING", 5)
    monkeypatch.setitem(app.conf, "worker_send_task_events", True)
    hang = threading.Event()
    monkeypatch.setattr(app.events, "Dispatcher", lambda *a, hostname="", **k: Dispatcher(hostname, hang))
    monkeypatch.setattr(app, "connection_for_write", lambda: None)
    sender = tasks.MessageEvents(app)
    report = message_report(1, [], [], [])
    try:
        sender.succeeded(tasks.Message("first", "w@h", time.monotonic()), report)
        wait_until(lambda: sender._busy_since, 5, "the publish under way")
        for n in range(8):
            sender.succeeded(tasks.Message(f"m{n}", "w@h", time.monotonic()), report)
        assert sender.dropped == 3
        assert warnings and "3 task events dropped" not in warnings[0]["error"]  # warned at the first, not each
        assert "1 task events dropped" in warnings[0]["error"]
    finally:
        hang.set()
