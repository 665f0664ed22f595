"""The benchmark scenarios. Each starts a fresh :class:`~bench.stack.Stack` and returns its figures.

Targets are the issue's, for a 2-core machine with everything on the same box.
The baseline runs first, so that delivery and lateness can be reported as
ratios to plain Celery measured in the same run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
import typing as t

import requests

from bench.coldstart import coldstart
from bench.load import JsonPoster, paced, random_delay, task_body, wrk_post
from bench.report import ScenarioResult, percentile
from bench.stack import BENCH_SETTINGS, ROOT, Stack, wait_until

DAY = 86_400


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and durations of one run (``--quick`` makes everything smaller)."""

    hq_workers: int = 1
    hq_pool: str = "prefork"
    hq_concurrency: int = 0  # 0: httpqueue's default (cores for prefork)
    create_seconds: float = 10
    create_connections: int = 32
    batch_seconds: float = 10
    batch_connections: int = 8
    batch_size: int = 1000
    delivery_n: int = 20_000
    lateness_rate: float = 500
    lateness_seconds: float = 30
    light_rate: float = 100
    light_seconds: float = 15
    delay_low: float = 1.0
    delay_high: float = 5.0
    scale_n: int = 1_000_000
    scale_create_seconds: float = 5
    intake_rounds: int = 3
    coldstart_seconds: float = 12
    intake_seconds: float = 8
    intake_connections: int = 32
    intake_client_seconds: float = 3
    intake_client_threads: int = 8
    intake_batch_seconds: float = 8
    intake_batch_clients: int = 4
    cores: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)

    @classmethod
    def quick(cls, **kw: t.Any) -> Config:
        return cls(create_seconds=4, batch_seconds=4, delivery_n=4_000, lateness_seconds=8, light_seconds=6,
                   scale_n=100_000, scale_create_seconds=3, intake_rounds=2, intake_seconds=3,
                   intake_client_seconds=2, intake_batch_seconds=3, coldstart_seconds=4, **kw)


@dataclasses.dataclass
class Baseline:
    """Plain Celery's figures that httpqueue's are compared with."""

    delivery_cps: float | None = None
    late_p50: float | None = None
    late_p99: float | None = None
    late_max: float | None = None


def _hq_params(cfg: Config) -> dict[str, t.Any]:
    return {"hq_workers": cfg.hq_workers, "hq_pool": cfg.hq_pool,
            "hq_concurrency": cfg.hq_concurrency or (cfg.cores if cfg.hq_pool == "prefork" else 8 * cfg.cores)}


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


# -- 1. create


def create(cfg: Config, base: Baseline) -> ScenarioResult:
    """Single-task ``POST /create`` with wrk, tasks due in a day (no delivery interferes)."""
    result = ScenarioResult("create", params={"seconds": cfg.create_seconds, "connections": cfg.create_connections,
                                              "api": "httpqueue api (its default server and workers)"})
    result.params.update(_hq_params(cfg))
    with Stack(cfg.hq_workers, cfg.hq_pool, cfg.hq_concurrency) as stack:
        stack.start_base().start_httpqueue()
        run = _wrk_create(stack, cfg.create_seconds, cfg.create_connections)
        result.add("create_rps", run.rps, "req/s", note="the goal is relative to the floor app: intake's create_vs_floor")
        result.add("create_p50", run.p50_us / 1000, "ms")
        result.add("create_p99", run.p99_us / 1000, "ms")
        result.add("create_errors", run.status_errors + run.socket_errors, "req", "<= 0")
    return result


def _wrk_create(stack: Stack, seconds: float, connections: int) -> t.Any:
    body = json.dumps(task_body(stack.receiver.url(), DAY))
    wrk_post(stack.api_url("/create"), body, seconds=1, connections=connections)  # warm every API worker
    return wrk_post(stack.api_url("/create"), body, seconds=seconds, connections=connections)


def batch(cfg: Config, base: Baseline) -> ScenarioResult:
    """``POST /v1/tasks/batch`` with 1,000 tasks per request, due in a day."""
    result = ScenarioResult("batch", params={"seconds": cfg.batch_seconds, "connections": cfg.batch_connections,
                                             "tasks_per_request": cfg.batch_size})
    with Stack(cfg.hq_workers, cfg.hq_pool, cfg.hq_concurrency) as stack:
        stack.start_base().start_httpqueue()
        url = stack.receiver.url()
        body = json.dumps({"tasks": [task_body(url, DAY, n) for n in range(cfg.batch_size)]})
        run = wrk_post(stack.api_url("/v1/tasks/batch"), body, seconds=cfg.batch_seconds,
                       connections=cfg.batch_connections)
        ok = run.requests - run.status_errors
        result.add("batch_tasks_per_s", ok * cfg.batch_size / (run.duration_us / 1e6), "tasks/s", ">= 50000")
        result.add("batch_request_p50", run.p50_us / 1000, "ms")
        result.add("batch_request_p99", run.p99_us / 1000, "ms")
        stored = stack.client().eval(SUM_SCHEDULED, 0)
        result.add("batch_tasks_stored", int(stored), "tasks", note="scheduled tasks counted in Redis afterwards")
        result.add("batch_errors", run.status_errors + run.socket_errors, "req", "<= 0")
    return result


SUM_SCHEDULED = """
local n = 0
for _, key in ipairs(redis.call('KEYS', 'hq:*:stats')) do
  local v = redis.call('HGETALL', key)
  for i = 1, #v, 2 do if string.sub(v[i], 1, 10) == 'scheduled|' then n = n + tonumber(v[i + 1]) end end
end
return n
"""


# -- 2. delivery


def delivery(cfg: Config, base: Baseline) -> ScenarioResult:
    """N tasks all due at the same instant (created with the batch endpoint): callbacks per second."""
    n = cfg.delivery_n
    lead = max(5.0, n / 5000 + 3)
    result = ScenarioResult("delivery", params={"tasks": n, "lead_s": lead, **_hq_params(cfg),
                                                "timer_horizon_s": float(BENCH_SETTINGS["timer_horizon"])})
    with Stack(cfg.hq_workers, cfg.hq_pool, cfg.hq_concurrency) as stack:
        stack.start_base().start_httpqueue()
        due_at = time.time() + lead
        created_s = _create_due_at(stack, n, due_at, cfg.batch_size)
        result.params["create_s"] = round(created_s, 2)
        _measure_delivery(result, stack, n, due_at, base.delivery_cps, target_factor=2.5)
        result.add("worker_rss_after", stack.worker_rss() / 2**20, "MiB")
    return result


def _create_due_at(stack: Stack, n: int, due_at: float, size: int, threads: int = 4) -> float:
    """Create n tasks due at ``due_at`` (absolute) through the batch endpoint; returns the seconds it took."""
    poster = JsonPoster(stack.api_url("/v1/tasks/batch"))
    url = stack.receiver.url()
    chunks = [range(i, min(n, i + size)) for i in range(0, n, size)]
    started = time.monotonic()

    def run(k: int) -> None:
        for chunk in chunks[k::threads]:
            delay = round(due_at - time.time(), 3)
            reply = poster.post({"tasks": [task_body(url, delay, i) for i in chunk]})
            bad = [r for r in reply["results"] if "id" not in r]
            if bad:
                raise RuntimeError(f"batch create refused tasks: {bad[:2]}")

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.monotonic() - started


def _measure_delivery(result: ScenarioResult, stack: Stack, n: int, due_at: float, base_cps: float | None,
                      target_factor: float | None) -> float:
    """Wait for n callbacks and add throughput figures; returns callbacks per second."""
    wait_until(lambda: stack.receiver.stats()["count"] >= n, max(0, due_at - time.time()) + 60 + n / 200,
               f"{n} callbacks", interval=0.5)
    time.sleep(0.5)  # let stragglers (duplicates) show up before counting
    stats = stack.receiver.stats()
    arrivals = stack.receiver.arrivals()
    first, last = min(arrivals), max(arrivals)
    cps = (len(arrivals) - 1) / (last - first) if last > first else None
    target = f">= {target_factor * base_cps:.0f}" if target_factor and base_cps else None
    result.add("callbacks_per_s", cps, "cb/s", target, vs_celery=_ratio(cps, base_cps),
               note=None if target or not target_factor else "target is 2.5x plain Celery: run the baseline too")
    result.add("first_after_due", (first - due_at) * 1000, "ms")
    result.add("last_after_due", (last - due_at) * 1000, "ms")
    result.add("duplicates", stats["count"] - stats["unique"], "callbacks", "<= 0")
    return cps or 0.0


# -- 3. lateness


def lateness(cfg: Config, base: Baseline) -> ScenarioResult:
    """Single-task creates at a steady rate, delays 1-5 s (both sides of the horizon): arrival - due."""
    result = ScenarioResult("lateness", params={"rate": cfg.lateness_rate, "seconds": cfg.lateness_seconds,
                                                "delays_s": [cfg.delay_low, cfg.delay_high],
                                                "timer_horizon_s": float(BENCH_SETTINGS["timer_horizon"]),
                                                **_hq_params(cfg)})
    with Stack(cfg.hq_workers, cfg.hq_pool, cfg.hq_concurrency) as stack:
        stack.start_base().start_httpqueue()
        sent = _paced_creates(stack, cfg, cfg.lateness_rate, cfg.lateness_seconds)
        _measure_lateness(result, stack, sent, base, p99_target=10)
    # the same at a light rate: the timer's own precision when the box is not saturated
    light = ScenarioResult("light")
    with Stack(cfg.hq_workers, cfg.hq_pool, cfg.hq_concurrency) as stack:
        stack.start_base().start_httpqueue()
        sent = _paced_creates(stack, cfg, cfg.light_rate, cfg.light_seconds)
        _measure_lateness(light, stack, sent, None, p99_target=None)
    result.params.update({f"light_{k}": v for k, v in light.params.items()})
    for figure in light.figures:
        figure.name = f"{figure.name}_at_{cfg.light_rate:g}"
        result.figures.append(figure)
    return result


def _paced_creates(stack: Stack, cfg: Config, rate: float, seconds: float) -> t.Any:
    poster = JsonPoster(stack.api_url("/create"))
    url = stack.receiver.url()
    return paced(lambda n: poster.post(task_body(url, random_delay(cfg.delay_low, cfg.delay_high), n)),
                 rate=rate, seconds=seconds)


def _measure_lateness(result: ScenarioResult, stack: Stack, sent: t.Any, base: Baseline | None,
                      p99_target: float | None) -> tuple[float | None, float | None, float | None]:
    result.params.update(sent=sent.sent, failed=sent.failed, achieved_rate=round(sent.rate, 1),
                         sender_max_behind_ms=round(sent.max_behind_ms, 1))
    if sent.errors:
        result.params["send_errors"] = sent.errors
    try:
        wait_until(lambda: stack.receiver.stats()["count"] >= sent.sent, 60, f"{sent.sent} callbacks", interval=0.5)
    except RuntimeError as exc:
        result.error = str(exc)
    late = stack.receiver.lateness()
    p50, p99, worst = percentile(late, 50), percentile(late, 99), max(late) if late else None
    result.add("received", len(late), "callbacks")
    result.add("late_p50", p50, "ms", vs_celery=_ratio(p50, base.late_p50 if base else None))
    result.add("late_p99", p99, "ms", f"<= {p99_target}" if p99_target else None,
               vs_celery=_ratio(p99, base.late_p99 if base else None))
    result.add("late_max", worst, "ms", vs_celery=_ratio(worst, base.late_max if base else None))
    result.add("early", sum(1 for x in late if x < 0), "callbacks", note="arrived before their due time")
    return p50, p99, worst


# -- 4. scale


def scale(cfg: Config, base: Baseline) -> ScenarioResult:
    """N pending tasks due in a day: Redis bytes per task, worker RSS, create throughput at N vs empty."""
    n = cfg.scale_n
    result = ScenarioResult("scale", params={"tasks": n, "loader": "TaskStore.create_many (pipelined create.lua)",
                                             **_hq_params(cfg),
                                             "content": '{"n": <int>}', "topic": "bench",
                                             "create_runs": "best of 2 per side"})
    with Stack(cfg.hq_workers, cfg.hq_pool, cfg.hq_concurrency) as stack:
        stack.start_base().start_httpqueue()
        time.sleep(3)  # a few promoter passes: the idle figure is a settled one
        rss_idle = stack.worker_rss()
        empty = _best_create(stack, cfg)
        client = stack.client()
        before = int(client.info("memory")["used_memory"])
        load_s = _bulk_load(stack, n)
        after = int(client.info("memory")["used_memory"])
        time.sleep(5)  # promoter passes over the full timer
        rss_full = stack.worker_rss()
        full = _best_create(stack, cfg)
        result.params["load_tasks_per_s"] = round(n / load_s)
        result.add("redis_bytes_per_task", (after - before) / n, "B", "<= 300")
        result.add("task_hash_bytes", _sample_hash_bytes(client), "B",
                   note="MEMORY USAGE of one task's hash (key included); the rest is its timer entry")
        result.add("worker_rss_idle", rss_idle / 2**20, "MiB")
        result.add("worker_rss_at_n", rss_full / 2**20, "MiB")
        result.add("worker_rss_growth", (rss_full / rss_idle - 1) * 100, "%", "<= 10")
        result.add("create_rps_empty", empty.rps, "req/s")
        result.add("create_rps_at_n", full.rps, "req/s")
        result.add("create_rps_change", (full.rps / empty.rps - 1) * 100, "%", ">= -20")
        result.add("create_p99_at_n", full.p99_us / 1000, "ms")
    return result


def _best_create(stack: Stack, cfg: Config, runs: int = 2) -> t.Any:
    """The best of a few short create runs: noise from a shared machine only ever lowers throughput."""
    return max((_wrk_create(stack, cfg.scale_create_seconds, cfg.create_connections) for _ in range(runs)),
               key=lambda r: r.rps)


def _sample_hash_bytes(client: t.Any) -> float | None:
    """Median MEMORY USAGE of a few task hashes."""
    _, keys = client.scan(0, match="hq:*:t:*", count=1000)
    sizes = sorted(int(client.memory_usage(k, samples=0)) for k in keys[:50])
    return float(sizes[len(sizes) // 2]) if sizes else None


def _bulk_load(stack: Stack, n: int, chunk: int = 5000) -> float:
    """n tasks due in a day straight into the store (the API's create script, pipelined)."""
    from httpqueue.config import Settings
    from httpqueue.clock import now_ms
    from httpqueue.context import Context
    from httpqueue.store import NewTask

    settings = Settings.load({**BENCH_SETTINGS, "redis_url": stack.redis_url}, environ={})
    store = Context(settings).store
    url = stack.receiver.url()
    started = time.monotonic()
    for start in range(0, n, chunk):
        now = now_ms()
        tasks = [NewTask(topic="bench", callback=url, content={"n": i}, due_ms=now + DAY * 1000, max_retry=0)
                 for i in range(start, min(n, start + chunk))]
        store.create_many(tasks, now)
    return time.monotonic() - started


# -- 5. intake: the API servers, and httpqueue against the least a Flask create can do

INTAKE_TARGETS = (("floor", "/create"), ("httpqueue", "/create"), ("httpqueue", "/v1/tasks"))
"""What the intake scenario drives: the floor app's create, httpqueue's two single-task creates."""


def intake(cfg: Config, base: Baseline) -> ScenarioResult:
    """Single creates and batches through granian and gunicorn, httpqueue against the floor (``bench/floor.py``).

    One fresh Redis; four API servers side by side (floor and httpqueue, each
    under both servers, with httpqueue's settings: the same worker counts and
    threads) and one idle delivery worker, as deployed (the tasks are due in
    a day; without a worker every create answer would carry the no-worker
    ``Warning`` header, a path no deployment takes). Then rounds:
    in each, every target under each server gets ``wrk`` for the same time, in
    an order that rotates from round to round, so that a slow spell of the
    shared machine does not fall on one combination; medians over the rounds.
    A Python client (keep-alive ``http.client``, a few threads) then the batch
    endpoint (1,000 tasks a request, a few connections) close each server's
    figures. The load average before and after says how busy the box was.
    """
    from httpqueue.api.wsgi import GRANIAN_BLOCKING_THREADS, GUNICORN_THREADS, default_workers
    from httpqueue.config import API_SERVERS

    load_before = os.getloadavg()
    result = ScenarioResult("intake", params={
        "rounds": cfg.intake_rounds, "seconds": cfg.intake_seconds, "connections": cfg.intake_connections,
        "wrk_threads": 2, "client_threads": cfg.intake_client_threads, "client_seconds": cfg.intake_client_seconds,
        "batch_clients": cfg.intake_batch_clients, "batch_seconds": cfg.intake_batch_seconds,
        "batch_size": cfg.batch_size,
        "servers": {"granian": f"{default_workers('granian', cfg.cores)} workers x "
                               f"{GRANIAN_BLOCKING_THREADS} blocking threads",
                    "gunicorn": f"{default_workers('gunicorn', cfg.cores)} gthread workers x "
                                f"{GUNICORN_THREADS} threads"},
        "load_before": [round(x, 2) for x in load_before], "source": _source()})
    runs: dict[tuple[str, str, str], list[tuple[t.Any, float]]] = {}
    with Stack() as stack:
        stack.start_base().start_workers()
        bases: dict[tuple[str, str], str] = {}
        for server in API_SERVERS:
            bases["floor", server] = stack.start_api(f"floor-{server}", [
                sys.executable, "-m", "bench.floor", "--server", server])
            bases["httpqueue", server] = stack.start_api(f"api-{server}", [
                sys.executable, "-m", "httpqueue", "api", "--server", server])
        body = json.dumps(task_body(stack.receiver.url(), DAY))
        combos = [(app, path, server) for app, path in INTAKE_TARGETS for server in API_SERVERS]
        for app, path, server in combos:  # warm every worker of every server
            wrk_post(bases[app, server] + path, body, seconds=1, connections=cfg.intake_connections)
        result.params["processes"] = {name: len(stack.pids(name)) for name in stack.children if name != "receiver"}
        for server in API_SERVERS:  # the worker is seen: answers as a deployment gets them
            answer = requests.post(bases["httpqueue", server] + "/create", data=body, timeout=10)
            if answer.status_code != 200 or "Warning" in answer.headers:
                raise RuntimeError(f"intake: httpqueue under {server} answered {answer.status_code} "
                                   f"{dict(answer.headers)}: no worker seen?")
        for n in range(cfg.intake_rounds):
            for app, path, server in combos[n % len(combos):] + combos[:n % len(combos)]:
                child = f"{'floor' if app == 'floor' else 'api'}-{server}"
                cpu = stack.cpu_seconds(child)
                run = wrk_post(bases[app, server] + path, body, seconds=cfg.intake_seconds,
                               connections=cfg.intake_connections)
                runs.setdefault((app, path, server), []).append((run, stack.cpu_seconds(child) - cpu))
        py = {(app, server): _python_creates(bases[app, server] + "/create", body, cfg.intake_client_seconds,
                                             cfg.intake_client_threads)
              for app in ("floor", "httpqueue") for server in API_SERVERS}
        batch_body = json.dumps({"tasks": [task_body(stack.receiver.url(), DAY, i) for i in range(cfg.batch_size)]})
        batches = {server: wrk_post(bases["httpqueue", server] + "/v1/tasks/batch", batch_body,
                                    seconds=cfg.intake_batch_seconds, connections=cfg.intake_batch_clients)
                   for server in API_SERVERS}
    _intake_figures(result, runs, py, batches, cfg.batch_size)
    result.params["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _intake_figures(result: ScenarioResult, runs: t.Mapping[tuple[str, str, str], list[tuple[t.Any, float]]],
                    py: t.Mapping[tuple[str, str], dict[str, float]], batches: t.Mapping[str, t.Any],
                    batch_size: int) -> None:
    names = {("floor", "/create"): "floor", ("httpqueue", "/create"): "create", ("httpqueue", "/v1/tasks"): "v1"}
    rps: dict[tuple[str, str], float] = {}
    per_round: dict[str, list[float]] = {}
    cpu: dict[tuple[str, str], float] = {}
    for (app, path, server), measured in runs.items():
        name = f"{names[app, path]}_{server}"
        done = [run for run, _ in measured]
        rps[names[app, path], server] = _median([r.rps for r in done])
        cpu[names[app, path], server] = _median([s * 1e6 / r.requests for r, s in measured if r.requests])
        per_round[name] = [round(r.rps) for r in done]
        result.add(f"{name}_rps", rps[names[app, path], server], "req/s", note="median of the rounds")
        result.add(f"{name}_p50", _median([r.p50_us / 1000 for r in done]), "ms")
        result.add(f"{name}_p99", _median([r.p99_us / 1000 for r in done]), "ms")
        result.add(f"{name}_cpu", cpu[names[app, path], server], "us/req",
                   note="CPU of the server's processes (master + workers) per request, median of the rounds")
        errors = sum(r.status_errors + r.socket_errors for r in done)
        if errors:
            result.add(f"{name}_errors", errors, "req", "<= 0")
    result.params["rps_per_round"] = per_round
    servers = sorted({server for _, server in rps})
    for server in servers:
        for what in ("create", "v1"):
            result.add(f"{what}_vs_floor_{server}", _ratio(rps.get((what, server)), rps.get(("floor", server))), "x",
                       ">= 0.8" if server == "granian" else None, note=f"httpqueue {what} / floor, {server}, req/s medians of the same run")
            result.add(f"{what}_cpu_vs_floor_{server}", _ratio(cpu.get((what, server)), cpu.get(("floor", server))),
                       "x", note="CPU per request, httpqueue / floor")
    if {"granian", "gunicorn"} <= set(servers):
        for what in ("floor", "create", "v1"):
            result.add(f"{what}_granian_vs_gunicorn", _ratio(rps.get((what, "granian")), rps.get((what, "gunicorn"))),
                       "x", note="req/s")
            result.add(f"{what}_cpu_granian_vs_gunicorn",
                       _ratio(cpu.get((what, "granian")), cpu.get((what, "gunicorn"))), "x", note="CPU per request")
    for (app, server), figures in py.items():
        name = f"py_{'floor' if app == 'floor' else 'create'}_{server}"
        result.add(f"{name}_rps", figures["rps"], "req/s", note="Python client (http.client keep-alive threads)")
        result.add(f"{name}_p99", figures["p99_ms"], "ms")
    for server, run in batches.items():
        ok = run.requests - run.status_errors
        result.add(f"batch_{server}_tasks_per_s", ok * batch_size / (run.duration_us / 1e6), "tasks/s", ">= 50000")
        result.add(f"batch_{server}_p50", run.p50_us / 1000, "ms")
        if run.status_errors + run.socket_errors:
            result.add(f"batch_{server}_errors", run.status_errors + run.socket_errors, "req", "<= 0")


def _source() -> dict[str, t.Any]:
    """The commit measured, and the files changed on top of it (other work in progress shows up here)."""
    import subprocess

    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.rstrip()
        except OSError:
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "changed": [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]}


def _median(values: t.Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _python_creates(url: str, body: str, seconds: float, threads: int) -> dict[str, float]:
    """As many creates as ``threads`` keep-alive Python connections manage in ``seconds``: rate and p50/p99."""
    poster = JsonPoster(url)
    doc = json.loads(body)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = time.monotonic() + seconds

    def run(k: int) -> None:
        mine = latencies[k]
        while time.monotonic() < stop:
            started = time.perf_counter()
            poster.post(doc)
            mine.append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    every = [x for mine in latencies for x in mine]
    return {"rps": len(every) / elapsed, "p50_ms": percentile(every, 50) or 0.0, "p99_ms": percentile(every, 99) or 0.0}


# -- 6. baseline


def baseline(cfg: Config, base: Baseline) -> ScenarioResult:
    """Plain Celery: apply_async(countdown=...) to a task that POSTs with requests, prefork pool."""
    from bench.baseline import QUEUE, configure, post

    n = cfg.delivery_n
    lead = max(5.0, n / 1000 + 3)  # apply_async publishes ~1,500/s here: all must be queued before the due time
    result = ScenarioResult("baseline", params={"tasks": n, "lead_s": lead, "pool": "prefork",
                                                "concurrency": cfg.cores, "rate": cfg.lateness_rate,
                                                "lateness_seconds": cfg.lateness_seconds})
    with Stack() as stack:
        stack.start_base().start_baseline(cfg.cores)
        app = configure(stack.baseline_broker_url())
        url = stack.receiver.url()
        broker = stack.client(db=2)
        time.sleep(2)
        rss_idle = stack.worker_rss("baseline")
        # delivery: N tasks due at one instant
        due_at = time.time() + lead
        due_ms = int(due_at * 1000)
        started = time.monotonic()
        with app.producer_or_acquire() as producer:
            for i in range(n):
                post.apply_async((url, f"d{i}", due_ms, {"n": i}), countdown=due_at - time.time(), producer=producer)
        result.params["publish_s"] = round(time.monotonic() - started, 2)
        if time.time() > due_at:
            result.params["warning"] = "publishing ended after the due time: raise the lead"
        wait_until(lambda: broker.llen(QUEUE) == 0 or time.time() > due_at, lead + 30, "the worker to take every message")
        rss_pending = stack.worker_rss("baseline")
        base.delivery_cps = _measure_delivery(result, stack, n, due_at, None, None)
        result.add("worker_rss_idle", rss_idle / 2**20, "MiB")
        result.add("worker_rss_n_pending", rss_pending / 2**20, "MiB", note="every ETA message held in worker memory")
        result.add("worker_bytes_per_pending", (rss_pending - rss_idle) / n, "B")
        # lateness at the same steady rate, same delays
        stack.receiver.reset()

        def send(i: int) -> None:
            delay = random_delay(cfg.delay_low, cfg.delay_high)
            post.apply_async((url, f"l{i}", int(time.time() * 1000 + delay * 1000), {"n": i}), countdown=delay)

        sent = paced(send, rate=cfg.lateness_rate, seconds=cfg.lateness_seconds)
        base.late_p50, base.late_p99, base.late_max = _measure_lateness(result, stack, sent, None, None)
    return result


SCENARIOS: dict[str, t.Callable[[Config, Baseline], ScenarioResult]] = {
    "baseline": baseline, "create": create, "batch": batch, "delivery": delivery, "lateness": lateness,
    "scale": scale, "intake": intake, "coldstart": coldstart,
}
"""In run order: the baseline first, so the others can be compared with it."""
