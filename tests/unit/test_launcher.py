"""The launcher: calls at their times on the delivery loop, a cap on calls at once, results recorded once."""
from __future__ import annotations

import asyncio
import threading
import time
import typing as t

import pytest

from httpqueue.delivery import aio
from httpqueue.worker.launcher import Launcher


class Recorded:
    """What ``done`` received, and on which thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[t.Any], str]] = []
        self.event = threading.Event()

    def __call__(self, results: list[t.Any]) -> None:
        self.calls.append((sorted(results), threading.current_thread().name))
        self.event.set()


def test_each_call_starts_at_its_time_and_done_runs_once_off_the_loop() -> None:
    launcher = Launcher(in_flight=8, max_pending=16)
    started: dict[int, float] = {}

    def call(n: int) -> t.Callable[[], t.Awaitable[int]]:
        async def run() -> int:
            started[n] = time.monotonic()
            assert threading.current_thread().name == "httpqueue-callbacks"
            return n
        return run

    base = time.monotonic() + 0.05
    done = Recorded()
    launcher.launch([(base + offset, call(n)) for n, offset in enumerate((0.2, 0.0, 0.1))], done)
    assert done.event.wait(5)
    launcher.drain(5)
    assert done.calls == [([0, 1, 2], done.calls[0][1])] and done.calls[0][1].startswith("httpqueue-record")
    for n, offset in enumerate((0.2, 0.0, 0.1)):
        assert base + offset <= started[n] < base + offset + 0.1, (n, started[n] - base)
    assert launcher.slots.free == launcher.slots.size


def test_no_more_than_in_flight_calls_at_once_and_the_rest_in_due_order() -> None:
    launcher = Launcher(in_flight=3, max_pending=64)
    running = 0
    most = 0
    order: list[int] = []

    def call(n: int) -> t.Callable[[], t.Awaitable[int]]:
        async def run() -> int:
            nonlocal running, most
            order.append(n)
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1
            return n
        return run

    now = time.monotonic()
    done = Recorded()
    launcher.launch([(now + n / 1000, call(n)) for n in range(20)], done)
    assert done.event.wait(5)
    assert most == 3 and order == list(range(20)) and done.calls[0][0] == list(range(20))


def test_a_call_that_raises_has_no_result_and_the_others_are_recorded(caplog: pytest.LogCaptureFixture) -> None:
    launcher = Launcher(in_flight=4, max_pending=8)

    async def fails() -> int:
        raise RuntimeError("boom")

    async def works() -> int:
        return 7

    done = Recorded()
    launcher.launch([(0.0, fails), (0.0, works)], done)
    assert done.event.wait(5)
    assert done.calls[0][0] == [7]
    assert "a delivery attempt raised" in caplog.text


def test_a_message_waits_for_room_while_too_many_tasks_are_handed_off() -> None:
    launcher = Launcher(in_flight=4, max_pending=4)
    release = threading.Event()

    async def slow() -> int:
        while not release.is_set():
            await asyncio.sleep(0.01)
        return 1

    first = Recorded()
    launcher.launch([(0.0, slow)] * 3, first)
    second = Recorded()
    waiting = threading.Thread(target=launcher.launch, args=([(0.0, slow)] * 2, second))
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()  # 3 + 2 > 4: the second message waits in its pool process
    release.set()
    waiting.join(5)
    assert first.event.wait(5) and second.event.wait(5)
    launcher.drain(5)
    assert launcher.slots.free == 4


def test_a_message_larger_than_the_room_still_goes() -> None:
    launcher = Launcher(in_flight=4, max_pending=2)

    async def one() -> int:
        return 1

    done = Recorded()
    launcher.launch([(0.0, one)] * 5, done)
    assert done.event.wait(5) and done.calls[0][0] == [1] * 5


def test_the_delivery_loop_is_one_per_process() -> None:
    assert aio.loop() is aio.loop()
    assert Launcher(1, 1).loop is aio.loop()


def test_a_recording_blocked_for_too_long_is_logged_with_its_stack(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from httpqueue.worker import launcher as module

    monkeypatch.setattr(module, "RECORDING_STUCK_AFTER", 0.2)
    monkeypatch.setattr(module, "WATCH_EVERY", 0.1)
    launcher = Launcher(in_flight=2, max_pending=4)
    release = threading.Event()

    async def call() -> int:
        return 1

    def blocked_recording(results: list[t.Any]) -> None:
        release.wait(10)

    launcher.launch([(time.monotonic(), call)], blocked_recording)
    try:
        deadline = time.monotonic() + 5
        while not any("blocked for" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
        [record] = [r for r in caplog.records if "blocked for" in r.getMessage()]  # once, not on every look
        assert "blocked_recording" in record.getMessage() and "release.wait" in record.getMessage()
    finally:
        release.set()
    assert launcher.drain(5)
