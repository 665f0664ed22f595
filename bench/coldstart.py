"""Cold start: how late the first tasks after a worker starts fire, against the same worker once warm.

Two measurements, in ``python -m bench.run --scenarios coldstart``:

* **first seconds of a worker**: the API and one worker are started (the bench
  waits only for ``/ready``, as a deployment's health check would), then
  single creates at ``coldstart_rate``/s with a 1 s delay begin at once, for
  ``coldstart_seconds`` twice over. Lateness (arrival - due, at the receiver)
  of the tasks created in the first window ("cold") against the second
  ("warm"): a worker that finishes warming up while its first tasks are due
  shows as a cold p99 far above the warm one.
* **right after** ``httpqueue run``: it is started ``coldstart_runs`` times on
  the bench's Redis; as soon as it prints that it is listening, one task due
  at once is created; how late it arrives.
"""
from __future__ import annotations

import sys
import time
import typing as t

import requests

from bench.load import JsonPoster, paced, task_body
from bench.report import ScenarioResult, percentile
from bench.stack import Stack, wait_until
from httpqueue.embedded import free_port

if t.TYPE_CHECKING:
    from bench.scenarios import Baseline, Config

RATE = 100.0
"""Creates per second in each window (the rate at which cold starts were seen to fire up to 1.5 s late)."""

WINDOW_S = 12.0
"""Seconds of each window (``Config.coldstart_seconds``): the first covers what a worker does in its first seconds."""

DELAY_S = 1.0
RUNS = 3


def coldstart(cfg: Config, base: Baseline) -> ScenarioResult:
    seconds = cfg.coldstart_seconds
    runs = RUNS if seconds >= WINDOW_S else 1
    result = ScenarioResult("coldstart", params={"rate": RATE, "window_s": seconds, "delay_s": DELAY_S, "runs": runs})
    _first_seconds(result, cfg, seconds)
    _after_run(result, runs)
    return result


def _first_seconds(result: ScenarioResult, cfg: Config, seconds: float) -> None:
    with Stack(cfg.hq_workers, cfg.hq_pool, cfg.hq_concurrency) as stack:
        stack.start_base().start_httpqueue()
        poster = JsonPoster(stack.api_url("/create"))
        url = stack.receiver.url()
        started = time.time() * 1000
        sent = paced(lambda n: poster.post(task_body(url, DELAY_S, n)), rate=RATE, seconds=2 * seconds)
        result.params.update(sent=sent.sent, failed=sent.failed)
        wait_until(lambda: stack.receiver.stats()["count"] >= sent.sent, 60, f"{sent.sent} callbacks", interval=0.5)
        arrivals = stack.receiver.arrivals()
        late = stack.receiver.lateness()
    split = started + (seconds + DELAY_S) * 1000
    cold = [late_ms for at, late_ms in zip(arrivals, late) if at * 1000 - late_ms < split]
    warm = [late_ms for at, late_ms in zip(arrivals, late) if at * 1000 - late_ms >= split]
    for name, values in (("cold", cold), ("warm", warm)):
        result.add(f"{name}_count", len(values), "callbacks")
        result.add(f"{name}_p50", percentile(values, 50), "ms")
        result.add(f"{name}_p99", percentile(values, 99), "ms")
        result.add(f"{name}_max", max(values) if values else None, "ms")
    cold_p99, warm_p99 = percentile(cold, 99), percentile(warm, 99)
    if cold_p99 is not None and warm_p99:
        result.add("cold_vs_warm_p99", round(cold_p99 / warm_p99, 2), "x")


def _after_run(result: ScenarioResult, runs: int) -> None:
    late: list[float] = []
    ready: list[float] = []
    with Stack() as stack:
        stack.start_base()
        for n in range(runs):
            port = free_port()
            began = time.monotonic()
            child = stack.spawn(f"run{n}", [sys.executable, "-m", "httpqueue", "run", "--address",
                                            f"127.0.0.1:{port}"])
            wait_until(lambda: not child.alive() or "listening on" in child.tail(), 60, "httpqueue run listening")
            if not child.alive():
                raise RuntimeError(f"httpqueue run exited:\n{child.tail()}")
            ready.append(round(time.monotonic() - began, 2))
            before = stack.receiver.stats()["count"]
            answer = requests.post(f"http://127.0.0.1:{port}/create", timeout=10,
                                   json=task_body(stack.receiver.url(), 0, n))
            answer.raise_for_status()
            wait_until(lambda: stack.receiver.stats()["count"] > before, 30, "the first task")
            late.append(stack.receiver.lateness()[-1])
            child.stop()
    result.params["run_ready_s"] = ready
    result.params["run_first_task_late_ms"] = late
    result.add("run_first_task_late_max", max(late) if late else None, "ms")
