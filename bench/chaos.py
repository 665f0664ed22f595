"""Chaos soak: ``python -m bench.chaos [--minutes 30] [--kill-every 10-30] [--sentinel] [--rate 50]``.

3 API nodes and 3 workers behind a real nginx on one Redis (or, with
``--sentinel``, a master, a replica and 3 sentinels whose master is killed a
few times), a real receiver on loopback. For ``--minutes``, clients create
tasks through nginx at ``--rate``/s (each with its own Idempotency-Key,
re-sent until acknowledged; delays of 1-20 s) and delete some while pending,
while a random API node or worker is killed with SIGKILL (whole process group)
every ``--kill-every`` seconds and started again. Then the soak drains (waits,
with a deadline, until every acknowledged, undeleted task arrived) and counts:
acknowledged, delivered, lost, fired after delete, keys that made two tasks,
duplicates (each must carry a higher attempt number, and follow a fault),
lateness. One JSON line on stdout, also appended to
``test-artifacts/chaos.jsonl``; exit status 1 when anything was lost, fired
after its delete, or a key made two tasks. Modules: :mod:`bench.chaos_load`
(the clients), :mod:`bench.chaos_faults` (the nodes and the faults).

Ctrl-C (or SIGTERM) once ends the load early and still drains and counts; twice
stops at once. Every process started is stopped on the way out.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import psutil
import requests

from bench.chaos_faults import Failovers, Fault, Killer, Nodes
from bench.chaos_load import DELAYS, Clients
from bench.report import machine
from tests.support.faults import Service
from tests.support.processes import ARTIFACTS
from tests.support.receiver import Receiver

PATH = "/chaos"
"""The receiver's path for the soak's callbacks."""

CHAOS_SETTINGS: dict[str, t.Any] = {
    # the product's defaults where recovery is concerned: a dead worker's attempts must come back through
    # the node registry (seconds), not through a short lease
    "lease": 30.0,
    "callback_timeout": 10.0,
    "promoter_interval": 0.25,
    "visibility_timeout": 3600,
    # 1-20 s delays then take both paths: handed to Celery at create, or parked and promoted
    "timer_horizon": 5.0,
}
"""Settings on top of the fault suite's (``tests/support/faults.py``)."""

GRACE = 30.0
"""Seconds unacknowledged creates may keep retrying once the load has stopped."""

EXPLAIN_WINDOW = 15.0
"""A duplicate is explained by a fault at most this long before its first arrival (or between its arrivals)."""


class Interrupts:
    """First SIGINT/SIGTERM: end the load early (``soft``); second: stop now (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.soft = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: t.Any) -> None:
        if self.soft.is_set():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stopping that follows is not interrupted
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            raise KeyboardInterrupt
        print(f"[chaos] signal {signum}: ending the load, then draining and counting", file=sys.stderr, flush=True)
        self.soft.set()


def parse_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    bounds = (float(low), float(high or low))
    if not 0 < bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH seconds, got {text!r}")
    return bounds


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def count(clients: Clients, receiver: Receiver, faults: list[Fault]) -> dict[str, t.Any]:
    """The soak's figures from what the clients were told and what the receiver got."""
    tally = clients.tally
    arrivals: dict[str, list[tuple[float, int, int]]] = collections.defaultdict(list)  # id -> (at, attempt, due)
    tasks_of_key: dict[str, set[str]] = collections.defaultdict(set)
    with receiver.lock:
        received = [r for r in receiver.requests if r.path == PATH]
    for r in received:
        arrivals[r.task_id].append((r.at, int(r.headers.get("X-Httpqueue-Attempt", "0")),
                                    int(r.headers.get("X-Httpqueue-Due", "0"))))
        tasks_of_key[r.json["content"]["key"]].add(r.task_id)
    for key, task_id in tally.acked.items():
        tasks_of_key[key].add(task_id)
    acked = set(tally.acked.values())
    expected = acked - set(tally.deleted)
    lost = sorted(expected - set(arrivals))
    after_delete = sorted(i for i, sent in tally.deleted.items() if any(a[0] > sent for a in arrivals.get(i, ())))
    double_key = {k: sorted(ids) for k, ids in tasks_of_key.items() if len(ids) > 1}
    duplicates = {i: a for i, a in arrivals.items() if len(a) > 1}
    rising = all(all(x[1] < y[1] for x, y in zip(a, a[1:])) for a in duplicates.values())
    fault_times = sorted(f.at for f in faults if f.kind in ("worker", "failover"))
    unexplained = [i for i, a in duplicates.items()
                   if not any(a[0][0] - EXPLAIN_WINDOW <= ft <= a[-1][0] for ft in fault_times)]
    lateness = [(a[0][0] * 1000 - a[0][2]) for a in arrivals.values() if a[0][2]]
    kinds = collections.Counter(f.kind for f in faults)
    backs = [f.back_s for f in faults if f.kind != "failover" and f.back_s is not None]
    return {
        "kills": kinds["api"] + kinds["worker"], "kills_api": kinds["api"], "kills_worker": kinds["worker"],
        "failovers": kinds["failover"],
        "restart_s_p50": percentile(backs, 0.5), "restart_s_max": max(backs, default=None),
        "acknowledged": len(acked), "deleted": len(tally.deleted),
        "delete_refused": sum(tally.delete_refused.values()),
        "delivered": len(expected & set(arrivals)), "lost": len(lost),
        "fired_after_delete": len(after_delete), "double_key": len(double_key),
        "duplicates": len(duplicates), "duplicate_deliveries": sum(len(a) - 1 for a in duplicates.values()),
        "duplicate_attempts_rise": rising, "duplicates_without_fault": len(unexplained),
        "lateness_ms": {"p50": percentile(lateness, 0.5), "p99": percentile(lateness, 0.99),
                        "max": percentile(lateness, 1.0)},
        "late_over_10s": sum(1 for late in lateness if late > 10_000),
        "creates_resent": tally.resent_creates, "deletes_resent": tally.resent_deletes,
        "creates_given_up": len(tally.given_up_creates), "deletes_given_up": tally.given_up_deletes,
        "statuses": dict(sorted(tally.statuses.items())),
        "_lost": lost, "_after_delete": after_delete, "_double_key": double_key,
        "_unexplained": unexplained[:50],
        "_not_rising": {i: a for i, a in duplicates.items() if not all(x[1] < y[1] for x, y in zip(a, a[1:]))},
        "_late": sorted((a[0][0] * 1000 - a[0][2], i) for i, a in arrivals.items() if a[0][2])[-20:],
    }


def evidence(url: str, ids: t.Iterable[str]) -> dict[str, t.Any]:
    """What the store says about tasks that broke a promise: the task and its history."""
    found: dict[str, t.Any] = {}
    for task_id in list(ids)[:100]:
        try:
            task = requests.get(f"{url}/v1/tasks/{task_id}", timeout=10).json()
            history = requests.get(f"{url}/v1/tasks/{task_id}/history", timeout=10).json()
            found[task_id] = {"task": task, "history": history}
        except (requests.RequestException, ValueError) as exc:
            found[task_id] = {"error": str(exc)}
    return found


def drain(clients: Clients, receiver: Receiver, deadline: float) -> float:
    """Wait until every acknowledged, undeleted task arrived (or ``deadline`` seconds); returns the wait."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        with receiver.lock:
            arrived = {r.task_id for r in receiver.requests if r.path == PATH}
        missing = set(clients.tally.acked.values()) - set(clients.tally.deleted) - arrived
        if not missing:
            break
        time.sleep(1.0)
    return round(time.monotonic() - start, 1)


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ARTIFACTS.parent, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ARTIFACTS.parent, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the load, in minutes")
    parser.add_argument("--kill-every", type=parse_range, default=(10.0, 30.0), metavar="LOW-HIGH",
                        help="seconds between two kills, drawn uniformly")
    parser.add_argument("--sentinel", action="store_true",
                        help="Redis master + replica + 3 sentinels, the master killed a few times")
    parser.add_argument("--failovers", type=int, default=0, help="master kills with --sentinel (0: one per 8 minutes, at least 2)")
    parser.add_argument("--rate", type=float, default=50.0, help="creates per second through nginx")
    parser.add_argument("--delete-share", type=float, default=0.1, help="share of tasks deleted while pending")
    parser.add_argument("--drain", type=float, default=180.0, help="seconds to wait for deliveries at the end")
    args = parser.parse_args(argv)
    interrupts = Interrupts()
    started, load_start = time.time(), [round(x, 2) for x in os.getloadavg()]
    stamp = time.strftime("%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="httpqueue-chaos-"))
    faults: list[Fault] = []
    receiver = Receiver().start()
    stoppers: list[t.Callable[[], None]] = [receiver.stop]
    cluster = None
    figures: dict[str, t.Any] = {}
    try:
        redis_client = None
        settings = dict(CHAOS_SETTINGS)
        if args.sentinel:
            from redis.sentinel import Sentinel

            from tests.support.sentinel import MASTER, SentinelGroup

            log("starting the Sentinel setup")
            cluster = SentinelGroup(tmp)
            stoppers.append(cluster.stop)
            cluster.start()
            settings.update(redis_url=cluster.url, broker_url=cluster.url, sentinel_master=MASTER,
                            create_min_replicas=1, create_replica_timeout=0.5)
            redis_client = Sentinel([("127.0.0.1", p) for p in cluster.sentinels]).master_for(MASTER)
        service = Service(tmp, **settings)
        stoppers.append(service.stop)
        nodes = Nodes(service, tmp, f"chaos{stamp}", redis_client=redis_client or service.client)
        stoppers.append(nodes.stop)
        log(f"starting 3 API nodes, 3 workers and nginx (logs: test-artifacts/chaos{stamp}-*.log, data: {tmp})")
        nodes.start()
        clients = Clients(nodes.url, receiver.url(PATH), args.rate, args.delete_share)
        stoppers.append(clients.abort)
        killer = Killer(nodes, args.kill_every, faults)
        seconds = args.minutes * 60
        stop_faults = threading.Event()
        threads = [threading.Thread(target=killer.run, args=(stop_faults,), name="chaos-kills", daemon=True)]
        failovers = None
        if cluster is not None:
            failovers = Failovers(cluster, MASTER, args.failovers or max(2, int(args.minutes // 8)), seconds, faults)
            threads.append(threading.Thread(target=failovers.run, args=(stop_faults,), name="chaos-failovers",
                                            daemon=True))
        load = threading.Thread(target=clients.run, args=(interrupts.soft,), name="chaos-load", daemon=True)
        log(f"load: {args.rate}/s for {args.minutes} min, a kill every {args.kill_every[0]}-{args.kill_every[1]} s")
        load_began = time.monotonic()
        load.start()
        for thread in threads:
            thread.start()
        last_report = time.monotonic()
        while not interrupts.soft.wait(1.0):
            if time.monotonic() - load_began >= seconds:
                interrupts.soft.set()
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                log(f"{len(faults)} faults, {len(clients.tally.acked)} acknowledged, "
                    f"{len(receiver.requests)} received, load {os.getloadavg()[0]:.1f}")
            if not any(thread.is_alive() for thread in threads[:1]):
                log("the kill thread stopped: ending the load")
                interrupts.soft.set()
        load_s = time.monotonic() - load_began
        load.join(timeout=30)
        log("load ended; faults stop, then the last restarts finish")
        stop_faults.set()
        for thread in threads:
            thread.join(timeout=300)
        clients.close(GRACE)
        log(f"draining (up to {args.drain:.0f} s)")
        drained = drain(clients, receiver, args.drain + DELAYS[1])
        figures = count(clients, receiver, faults)
        figures["drain_s"] = drained
        broken = set(figures["_lost"]) | set(figures["_after_delete"])
        late = [i for ms, i in figures["_late"] if ms > 10_000]
        not_rising = figures["_not_rising"]
        if broken or figures["_double_key"] or figures["_unexplained"] or late or not_rising:
            out = ARTIFACTS / f"chaos{stamp}-evidence.json"
            out.write_text(json.dumps({
                "lost": figures["_lost"], "fired_after_delete": figures["_after_delete"],
                "double_key": figures["_double_key"], "duplicates_without_fault": figures["_unexplained"],
                "faults": [f.__dict__ for f in faults],
                "late_ms": figures["_late"],
                "duplicates_not_rising": not_rising,  # id -> [(arrival, attempt header, due)]
                "tasks": evidence(nodes.url, sorted(broken) + figures["_unexplained"][:20] + late[-5:]
                                  + sorted(not_rising)[:20]),
            }, indent=1, default=str))
            figures["evidence"] = str(out.relative_to(ARTIFACTS.parent))
        if figures["_unexplained"]:
            stacks = ARTIFACTS / f"chaos{stamp}-stacks.txt"
            try:
                nodes.dump_stacks(stacks)
                figures["stacks"] = str(stacks.relative_to(ARTIFACTS.parent))
            except (OSError, subprocess.SubprocessError, psutil.Error) as exc:
                log(f"py-spy dump: {exc!r}")
        figures["restart_errors"] = killer.errors + (failovers.errors if failovers else [])
        figures["passed_on_by_nginx"] = nodes.nginx.upstream_errors()
        figures["load_s"] = round(load_s, 1)
    finally:
        log("stopping every process")
        for stopper in reversed(stoppers):
            try:
                stopper()
            except BaseException as exc:  # keep stopping the rest
                log(f"stopping: {exc!r}")
    ok = bool(figures) and not (figures["lost"] or figures["fired_after_delete"] or figures["double_key"])
    summary = {
        "bench": "chaos", "command": "python -m bench.chaos " + " ".join(sys.argv[1:] if argv is None else argv),
        "minutes": args.minutes, "kill_every_s": list(args.kill_every), "sentinel": args.sentinel,
        "rate": args.rate, "delays_s": list(DELAYS), "delete_share": args.delete_share,
        **{k: v for k, v in figures.items() if not k.startswith("_")},
        "ok": ok, "duration_s": round(time.time() - started, 1),
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "commit": commit(), **machine(),
    }
    line = json.dumps(summary)
    print(line, flush=True)
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "chaos.jsonl", "a") as jsonl:
        jsonl.write(line + "\n")
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
