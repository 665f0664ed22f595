"""Cron ticks with etcd: of several schedulers racing for the same ticks, exactly one takes each."""
from __future__ import annotations

import collections
import threading
import time
import typing as t

from httpqueue.clock import now_ms
from httpqueue.store.schedules import Schedule
from tests.support.etcd import EtcdNodes

SCHEDULERS = 3


def test_each_tick_is_taken_by_exactly_one_of_several_schedulers(nodes: EtcdNodes) -> None:
    contexts = [nodes.context() for _ in range(SCHEDULERS)]  # one Redis copy, as nodes of one deployment share
    contexts[0].schedules.save(Schedule("every-second", "* * * * * *", "UTC", {"topic": "t"}, created_ms=now_ms()),
                               now_ms())
    taken: list[tuple[int, int]] = []  # (tick, scheduler)
    lock, stop = threading.Lock(), threading.Event()

    def run(index: int, ctx: t.Any) -> None:
        while not stop.is_set():  # what the ticker thread does, without creating tasks
            now = now_ms()
            for schedule, tick in ctx.schedules.due(now):
                with lock:
                    taken.append((tick, index))
                ctx.schedules.advance(schedule, tick, f"{schedule.id}@{tick}", now)
            time.sleep(0.01)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(contexts)]
    for thread in threads:
        thread.start()
    time.sleep(3.5)  # the duration under test: three or four ticks of a per-second schedule
    stop.set()
    for thread in threads:
        thread.join(10)
    per_tick = collections.Counter(tick for tick, _ in taken)
    assert len(per_tick) >= 3, taken
    assert set(per_tick.values()) == {1}, f"ticks taken more than once: {per_tick}"
    claims, _ = nodes.client().get_prefix(f"{nodes.etcd_prefix}run/ticks/")
    assert {kv.key.rsplit("@", 1)[1] for kv in claims} == {str(tick) for tick in per_tick}
