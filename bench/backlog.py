"""A growing backlog of pending tasks, and what it costs at each size: memory, create and promote rates.

:class:`Backlog` fills the store straight through ``TaskStore.create_many``
(the API's own ``create.lua``, one script call per shard per chunk) with tasks
due 1 to 30 days ahead, so nothing fires while the curve is measured. At each
point it measures:

* Redis memory: the ``used_memory`` delta since the empty store, divided by
  the tasks, and where it goes (:mod:`bench.memory`);
* create rates *at that backlog*, through :class:`~httpqueue.services.TaskService`
  (validation done, SSRF check, store call, event): single creates and 1,000-task
  batches, one client thread, timing only the create calls; the tasks a rate
  run creates are removed right after each round (untimed), so the backlog
  stays at its size while it is measured;
* promote rate: tasks parked due 2 hours ahead (in hour lists), then promoter
  passes with a clock moved to their due time, so ``promote.lua`` moves them
  to the timers and walks those with the whole backlog behind them; publishing is a counter (what it costs does not
  depend on the backlog); and the time of an idle pass (nothing due);
* the same rates on a *control*, a small backlog (10^4 tasks, standalone)
  measured in alternating rounds with the big one (:func:`side_by_side`), so
  that each figure also comes as a ratio to a baseline of the same minute;
* for every rate, Redis's own microseconds per call (``INFO commandstats``,
  summed over the masters): the part of the figure the load of a shared
  machine does not move.
"""
from __future__ import annotations

import dataclasses
import random
import time
import typing as t

import psutil

from httpqueue.clock import now_ms
from httpqueue.config import Settings
from httpqueue.context import Context
from httpqueue.services import TaskService
from httpqueue.store.keys import TIMER_HOUR_MS
from httpqueue.store.records import Dispatch, NewTask
from httpqueue.worker.promoter import Promoter

from bench.stores import StoreTarget

DAY_MS = 86_400_000
TOPIC = "bench"
PROBE_TOPIC = "probe"
"""Topic of the tasks a rate run creates and removes again (its statistics field is dropped afterwards)."""

CALLBACK = "http://127.0.0.1:9/callback/{n}"
"""A realistic callback: loopback, discard port (nothing is ever delivered), one path segment per task."""


def content(n: int) -> dict[str, int]:
    """The small JSON content of task ``n``."""
    return {"n": n}


@dataclasses.dataclass(frozen=True)
class RateConfig:
    """How long and how much each rate run is."""

    seconds: float = 2.0
    rounds: int = 3
    batch: int = 1000
    fill_chunk: int = 2000
    promote_probe: int = 10_000
    idle_passes: int = 20


class Backlog:
    """The store of one :class:`~bench.stores.StoreTarget`, filled step by step."""

    def __init__(self, target: StoreTarget, cfg: RateConfig) -> None:
        self.target = target
        self.cfg = cfg
        self.settings = Settings.load(settings_for(target), environ={})
        self.ctx = Context(self.settings)
        self.store = self.ctx.store
        self.service = TaskService(self.ctx, publish=lambda dispatches, now: len(dispatches))
        self.scripts = ScriptTime(target)
        self.pending = 0
        self.rng = random.Random(11)

    # -- filling

    def fill(self, size: int) -> float:
        """Add tasks until ``size`` are pending; returns tasks per second of the fill."""
        added = size - self.pending
        started = time.monotonic()
        while self.pending < size:
            chunk = min(self.cfg.fill_chunk, size - self.pending)
            now = now_ms()
            tasks = [self._task(self.pending + i, now) for i in range(chunk)]
            self.store.create_many(tasks, now)
            self.pending += chunk
        return added / max(time.monotonic() - started, 1e-9)

    def _task(self, n: int, now: int, topic: str = TOPIC, due_ms: int | None = None) -> NewTask:
        due = due_ms if due_ms is not None else now + self.rng.randrange(DAY_MS, 30 * DAY_MS)
        return NewTask(topic=topic, callback=CALLBACK.format(n=n), content=content(n), due_ms=due, max_retry=0)

    def fields(self, n: int) -> dict[str, t.Any]:
        """A create request's validated fields (what the API hands the service): retry 0, no options."""
        return {"topic": PROBE_TOPIC, "callback": CALLBACK.format(n=n), "content": content(n),
                "delay": self.rng.randrange(DAY_MS, 30 * DAY_MS) / 1000, "retry": 0}

    # -- create rates

    def single_creates(self) -> dict[str, float]:
        """Single creates through the service for ``seconds``: creates/s and Redis us per create."""
        ids: list[str] = []
        timed = 0.0
        spent = Spent()
        count = 0
        self.scripts.reset()
        deadline = time.monotonic() + self.cfg.seconds
        while time.monotonic() < deadline:
            fields = self.fields(count)
            started = time.perf_counter()
            created = self.service.create(fields)
            timed += time.perf_counter() - started
            ids.append(created.task_id)
            count += 1
            if len(ids) >= 1000 or time.monotonic() >= deadline:
                spent += self.scripts.read()  # read before the removal: its calls are not the create's
                self.remove(ids, "scheduled")
                ids = []
                self.scripts.reset()
        return {"per_s": count / timed, **spent.per(count), "count": count}

    def batch_creates(self) -> dict[str, float]:
        """1,000-task batches through the service for ``seconds``: tasks/s and Redis us per task."""
        timed = 0.0
        count = 0
        spent = Spent()
        deadline = time.monotonic() + self.cfg.seconds
        while time.monotonic() < deadline:
            items = [self.fields(count + i) for i in range(self.cfg.batch)]
            self.scripts.reset()
            started = time.perf_counter()
            results = self.service.create_many(items)
            timed += time.perf_counter() - started
            spent += self.scripts.read()
            count += len(items)
            self.remove([r.task_id for r in results if r.task_id], "scheduled")
        return {"per_s": count / timed, **spent.per(count), "count": count}

    # -- promote rate

    def promote_round(self) -> dict[str, float]:
        """Park ``promote_probe`` tasks due in 2 hours, then pass until all are taken: (tasks/s, Redis us/task)."""
        now = now_ms()
        due = now + 2 * 3600_000
        tasks = [self._task(n, now, PROBE_TOPIC, due) for n in range(self.cfg.promote_probe)]
        ids = [c.task_id for c in self.store.create_many(tasks, now) if hasattr(c, "task_id")]
        taken: list[Dispatch] = []

        def publish(dispatches: t.Sequence[Dispatch], at: int) -> int:
            taken.extend(dispatches)
            return len(dispatches)

        clock = (due - self.settings.horizon_ms + 1000) / 1000
        promoter = Promoter(self.store, publish, clock=lambda: clock, name="bench")
        self.scripts.reset()
        started = time.perf_counter()
        for _ in range(10 + 2 * len(ids) // max(1, self.store.batch)):  # bounded: a few passes suffice
            promoter.run_pass()
            if len(taken) >= len(ids):
                break
        elapsed = time.perf_counter() - started
        spent = self.scripts.read()
        self.remove(ids, "queued", history=True)
        if len(taken) < len(ids):
            raise RuntimeError(f"promoter took {len(taken)} of {len(ids)} due tasks")
        return {"per_s": len(ids) / elapsed, **spent.per(len(ids)), "count": len(ids)}

    def idle_pass_ms(self) -> float:
        """Mean time of a promoter pass when nothing is due (what every worker pays 4 times a second)."""
        promoter = Promoter(self.store, lambda dispatches, now: 0, name="bench-idle")
        started = time.perf_counter()
        for _ in range(self.cfg.idle_passes):
            promoter.run_pass()
        return (time.perf_counter() - started) / self.cfg.idle_passes * 1000

    # -- cleaning up after a rate run

    def remove(self, ids: t.Sequence[str], state: str, history: bool = False) -> None:
        """Take a rate run's probe tasks out again: task hash, timer, hour list or lease entry, history, statistics
        field (an hour list entry too, so the backlog's lists hold no stale entries that would count as memory)."""
        keys = self.ctx.keys
        client = self.target.routed()
        dues: list[t.Any] = [None] * len(ids)
        if state == "scheduled":
            pipe = client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(keys.task(task_id), "due")
            dues = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for task_id, due in zip(ids, dues):
            shard = keys.shard_of(task_id)
            pipe.delete(keys.task(task_id))
            if history:
                pipe.delete(keys.history(task_id))
            pipe.zrem(keys.timer(shard) if state == "scheduled" else keys.inflight(shard), task_id)
            if due is not None:
                pipe.lrem(keys.hour_list(shard, int(due) // TIMER_HOUR_MS), 0, task_id)
        for shard in range(keys.shards):
            pipe.hdel(keys.stats(shard), f"{state}|{PROBE_TOPIC}")
        pipe.execute()


@dataclasses.dataclass(frozen=True)
class Rates:
    """One backlog's rates at one point: the best of the rounds, Redis's cost over all of them, an idle pass."""

    single: dict[str, float]
    batch: dict[str, float]
    promote: dict[str, float]
    idle_pass_ms: float

    @classmethod
    def of(cls, runs: t.Sequence[tuple[dict[str, float], dict[str, float], dict[str, float]]],
           idle_pass_ms: float) -> Rates:
        """Per kind of run: the best rate (a shared machine's noise only ever lowers a rate) and Redis's
        cost per task over every round (more tasks: finer than one run's CPU clock ticks)."""
        return cls(single=_combine([r[0] for r in runs]), batch=_combine([r[1] for r in runs]),
                   promote=_combine([r[2] for r in runs]), idle_pass_ms=idle_pass_ms)


def _combine(runs: t.Sequence[dict[str, float]]) -> dict[str, float]:
    count = sum(r["count"] for r in runs)
    return {"per_s": max(r["per_s"] for r in runs), "count": count,
            **{k: sum(r[k] * r["count"] for r in runs) / count for k in ("redis_us", "redis_cpu_us")}}


def side_by_side(backlogs: t.Sequence[Backlog], rounds: int) -> list[Rates]:
    """The rates of several backlogs in alternating rounds (order reversed every round).

    The control backlog measured in the same minute as the big one takes the
    machine's load drift out of their ratio: on a box shared with other
    work, a rate measured ten minutes earlier is not a baseline.
    """
    runs: list[list[tuple[dict[str, float], dict[str, float], dict[str, float]]]] = [[] for _ in backlogs]
    for n in range(rounds):
        order = range(len(backlogs)) if n % 2 == 0 else reversed(range(len(backlogs)))
        for i in order:
            backlog = backlogs[i]
            runs[i].append((backlog.single_creates(), backlog.batch_creates(), backlog.promote_round()))
    return [Rates.of(run, backlog.idle_pass_ms()) for run, backlog in zip(runs, backlogs)]


def warm_up(backlog: Backlog) -> None:
    """One short round of each rate run, untimed: the first point is then not the one paying for
    connections, loaded scripts and the SSRF check's caches."""
    cfg = backlog.cfg
    backlog.cfg = dataclasses.replace(cfg, seconds=0.5, idle_passes=2)
    try:
        side_by_side([backlog], 1)
    finally:
        backlog.cfg = cfg


def settings_for(target: StoreTarget) -> dict[str, str]:
    """httpqueue's defaults, pointed at the target, callbacks to loopback allowed (they are never sent)."""
    return {"redis_url": target.redis_url, "broker_url": target.broker_url, "callback_allow": "127.0.0.0/8"}


@dataclasses.dataclass(frozen=True)
class Spent:
    """What Redis spent on a run: time inside script calls, and CPU time of its process(es), in us."""

    script_us: float = 0.0
    cpu_us: float = 0.0

    def __add__(self, other: Spent) -> Spent:
        return Spent(self.script_us + other.script_us, self.cpu_us + other.cpu_us)

    def per(self, count: int) -> dict[str, float]:
        return {"redis_us": self.script_us / count, "redis_cpu_us": self.cpu_us / count}


class ScriptTime:
    """Redis's own cost of a run, read on the server, summed over the masters.

    Two readings: the time inside script calls (``INFO commandstats``, a
    wall clock: a Redis process that is preempted mid-script counts the wait)
    and the CPU time of the ``redis-server`` processes (psutil: command
    parsing and replies included, preemption excluded). Neither includes
    the client's CPU, so when a rate changes with the backlog they say
    whether Redis got slower or the client did; the CPU time is the one the
    load of a shared machine moves least.
    """

    COMMANDS = ("cmdstat_evalsha", "cmdstat_eval")

    def __init__(self, target: StoreTarget) -> None:
        self.target = target
        self.processes = [psutil.Process(pid) for pid in target.pids()]
        self.cpu_mark = 0.0

    def reset(self) -> None:
        for client in self.target.masters():
            client.config_resetstat()
        self.cpu_mark = self._cpu()

    def read(self) -> Spent:
        """What was spent since :meth:`reset`."""
        total = 0.0
        for client in self.target.masters():
            stats = client.info("commandstats")
            total += sum(float(stats.get(name, {}).get("usec", 0)) for name in self.COMMANDS)
        return Spent(total, (self._cpu() - self.cpu_mark) * 1e6)

    def _cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.processes)
