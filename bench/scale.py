"""The scale curve: pending tasks from 10^4 to 10^7, and throughput with more workers and API nodes.

``python -m bench.scale [--part backlog,nodes] [--store standalone,cluster] [--max 10000000] [--plot]``

``backlog`` (:mod:`bench.backlog`): one fresh Redis per store kind (a
standalone ``redis-server``, or a 3-master Redis Cluster from the test suite's
fixture), a real ``httpqueue worker`` on it, then the store is filled to each
point (10^4, 10^5, 10^6, 10^7, stopping at ``--max``). At each point: Redis
bytes per pending task and where they go (:mod:`bench.memory`), single and
batch create rates through the service, the promote rate and an idle
promoter pass, each with Redis's own microseconds per call, and the worker's
RSS. The rates are measured in alternating rounds with those of a control
(a standalone Redis holding 10^4 tasks, started alongside), and reported as
ratios to it too (``vs_control``): one baseline of the same minute for both
store kinds, so the cluster's 10^4 point reads as the cost of cluster mode
and each curve's shape as the cost of the backlog. The worker is paused (SIGSTOP) while the rates run, so that its
promoter's passes are not counted as the creates' Redis time; its RSS is read
after it has run a few passes over the full backlog.

``nodes`` (:mod:`bench.nodes`): create and delivery throughput with 1, 2 and
3 workers and 1 and 3 API nodes on one Redis.

Prints one JSON line per point (machine, load average, figures, and the
rates as ratios to the first point of the same run), then a summary table on
stderr; ``--plot`` redraws ``docs/scale-*.png`` from this run's lines
(``python -m bench.plots FILE`` from saved ones).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import typing as t
from pathlib import Path

from bench import memory, plots, stores
from bench.backlog import Backlog, RateConfig, Rates, settings_for, side_by_side, warm_up
from bench.report import machine
from bench.stack import ROOT, Child, wait_until

POINTS = (10**4, 10**5, 10**6, 10**7)
RATE_FIGURES = ("create_single_per_s", "create_batch_per_s", "promote_per_s", "idle_pass_ms",
                "worker_rss_mib", "create_single_redis_us", "create_batch_redis_us", "promote_redis_us",
                "create_single_redis_cpu_us", "create_batch_redis_cpu_us", "promote_redis_cpu_us")
"""Figures also reported as a ratio to the first point of the run (``vs_first``)."""

Emit = t.Callable[[dict[str, t.Any]], None]


class Worker:
    """One ``httpqueue worker`` (promoter included) on the target, paused while rates are measured."""

    NAME = "scale@bench"

    def __init__(self, target: stores.StoreTarget, logdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPQUEUE_")}
        env.update({f"HTTPQUEUE_{k.upper()}": v for k, v in settings_for(target).items()})
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.child = Child([sys.executable, "-m", "httpqueue", "worker", "-n", self.NAME, "--without-mingle",
                            "--without-gossip", "--loglevel", "WARNING"], env, logdir / "worker.log")
        client = target.routed()
        wait_until(lambda: not self.child.alive() or client.exists(f"hq:worker:{self.NAME}"), 90, "the worker")
        if not self.child.alive():
            raise RuntimeError(f"the worker exited:\n{self.child.tail()}")

    def rss_mib(self) -> float:
        return self.child.rss() / 2**20

    @contextlib.contextmanager
    def paused(self) -> t.Iterator[None]:
        os.killpg(self.child.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.child.pid, signal.SIGCONT)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.child.pid, signal.SIGCONT)
        self.child.stop()


CONTROL_SIZE = 10**4
"""Tasks in the control store whose rates are measured alongside every point."""


def backlog_curve(kind: str, points: t.Sequence[int], cfg: RateConfig, emit: Emit) -> list[dict[str, t.Any]]:
    """The curve on one fresh store of ``kind``; one JSON document per point."""
    lines: list[dict[str, t.Any]] = []
    with stores.started(kind) as target, stores.started("standalone") as control_target:
        worker = Worker(target, target.workdir)
        try:
            backlog = Backlog(target, cfg)
            control = Backlog(control_target, cfg)
            control.fill(CONTROL_SIZE)
            for each in (backlog, control):
                warm_up(each)
            time.sleep(2)  # a few promoter passes and the scripts loaded: the empty figure is a settled one
            empty = memory.snapshot(target)
            for size in points:
                line = _point(target, backlog, control, worker, empty, size)
                _add_ratios(line, lines[0] if lines else line)
                lines.append(line)
                emit(line)
        finally:
            worker.stop()
    return lines


def _point(target: stores.StoreTarget, backlog: Backlog, control: Backlog, worker: Worker,
           empty: memory.Snapshot, size: int) -> dict[str, t.Any]:
    """Fill to ``size``, then measure memory, the worker's RSS and the rates at that size (and the control's)."""
    fill_rate = backlog.fill(size)
    now = memory.snapshot(target)
    breakdown = memory.measure(target, backlog.ctx.keys, size, empty, now)
    time.sleep(3)  # a dozen promoter passes over the full backlog before the RSS is read
    rss = worker.rss_mib()
    with worker.paused():
        rates, control_rates = side_by_side([backlog, control], backlog.cfg.rounds)
    figures = {
        "redis_bytes_per_task": breakdown.per_task, "redis_used_memory_mib": now.used_memory / 2**20,
        "redis_rss_mib": now.rss / 2**20, "keys": now.keys, **_rate_figures(rates),
        "worker_rss_mib": rss, "fill_per_s": fill_rate,
    }
    control_figures = _rate_figures(control_rates)
    return {"bench": "scale", "part": "backlog", "store": target.kind, "pending": size, **machine(),
            "load": [round(x, 2) for x in os.getloadavg()],
            "figures": {k: _round(v) for k, v in figures.items()},
            "control": {k: _round(v) for k, v in control_figures.items()},
            "vs_control": {k: _round(figures[k] / v) for k, v in control_figures.items() if v},
            "bytes": {k: _round(v) if isinstance(v, float) else v for k, v in breakdown.as_dict().items()},
            "params": {"rate_seconds": backlog.cfg.seconds, "rate_rounds": backlog.cfg.rounds,
                       "batch": backlog.cfg.batch, "promote_probe": backlog.cfg.promote_probe,
                       "shards": backlog.ctx.keys.shards, "control": f"standalone, {CONTROL_SIZE} pending",
                       "task": {"topic": "bench", "callback": "http://127.0.0.1:9/callback/<n>",
                                "content": {"n": "<n>"}, "retry": 0, "due": "1-30 days ahead"}}}


def _rate_figures(rates: Rates) -> dict[str, float]:
    figures = {"idle_pass_ms": rates.idle_pass_ms}
    for name, run in (("create_single", rates.single), ("create_batch", rates.batch), ("promote", rates.promote)):
        figures.update({f"{name}_per_s": run["per_s"], f"{name}_redis_us": run["redis_us"],
                        f"{name}_redis_cpu_us": run["redis_cpu_us"]})
    return figures


def _add_ratios(line: dict[str, t.Any], first: dict[str, t.Any]) -> None:
    line["vs_first"] = {name: _round(line["figures"][name] / first["figures"][name])
                        for name in RATE_FIGURES if first["figures"].get(name)}


def _round(value: float) -> float:
    return round(value, 3) if abs(value) < 100 else round(value, 1)


# -- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="backlog,nodes", help="comma-separated: backlog, nodes (default both)")
    parser.add_argument("--store", default="standalone", help="comma-separated: standalone, cluster")
    parser.add_argument("--max", type=float, default=1e7, help="largest backlog (default 10^7)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each create rate run (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rate rounds per point, alternating with the control (default 3)")
    parser.add_argument("--workers", default="1,2,3", help="worker counts of the nodes part")
    parser.add_argument("--apis", default="1,3", help="API node counts of the nodes part")
    parser.add_argument("--nodes-seconds", type=float, default=5.0, help="length of each wrk run of the nodes part")
    parser.add_argument("--delivery-tasks", type=int, default=20_000, help="tasks due at once in the nodes part")
    parser.add_argument("--plot", action="store_true", help="redraw docs/scale-*.png from this run")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    args.parts = _choices(parser, args.part, ("backlog", "nodes"))
    args.stores = _choices(parser, args.store, stores.STORE_KINDS)
    args.points = [p for p in POINTS if p <= args.max] or [int(args.max)]
    return args


def _choices(parser: argparse.ArgumentParser, value: str, allowed: t.Sequence[str]) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = set(chosen) - set(allowed)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))} (from {', '.join(allowed)})")
    return chosen


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` stops what it started."""
    def handler(signum: int, frame: t.Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _stop_on_sigterm()
    lines: list[dict[str, t.Any]] = []

    def emit(line: dict[str, t.Any]) -> None:
        text = json.dumps(line, separators=(",", ":"))
        print(text, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(text + "\n")
        lines.append(line)

    cfg = RateConfig(seconds=args.seconds, rounds=args.rounds)
    if "backlog" in args.parts:
        for kind in args.stores:
            print(f"[scale] backlog on {kind}: {', '.join(f'{p:,}' for p in args.points)}", file=sys.stderr)
            backlog_curve(kind, args.points, cfg, emit)
    if "nodes" in args.parts:
        from bench import nodes

        nodes.matrix([int(w) for w in args.workers.split(",")], [int(a) for a in args.apis.split(",")], emit,
                     seconds=args.nodes_seconds, tasks=args.delivery_tasks)
    print(plots.summary(lines), file=sys.stderr)
    if args.plot:
        for path in plots.draw(lines, ROOT / "docs"):
            print(f"[scale] wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
