"""The scale curve's figures: PNGs for the docs, and a plain-text summary.

``python -m bench.plots RESULTS.jsonl [--dir docs] [--only memory,rates,nodes]`` redraws the PNGs from the
JSON lines ``python -m bench.scale --out RESULTS.jsonl`` saved (``bench.scale
--plot`` does the same from the run it just made). matplotlib's Agg backend:
no display needed. Three files:

* ``scale-memory.png``: Redis bytes per pending task against the backlog, split
  by kind of key, one panel per store kind, the 300-byte goal as a line;
* ``scale-rates.png``: create, batch and promote rates, Redis's CPU time per
  task and the idle promoter pass, each as a ratio to the control measured
  alongside (a standalone Redis with 10^4 tasks; flat = no cost of the
  backlog), and the worker's RSS;
* ``scale-nodes.png``: create and delivery throughput per worker and API node count.

Each carries the cores and load average of the run it shows.
"""
from __future__ import annotations

import argparse
import json
import sys
import typing as t
from pathlib import Path

GOAL_BYTES = 300
PARTS = (("task_hash", "task hash"), ("timer", "timer entry"), ("keyspace_table", "keyspace table"),
         ("stats", "stats"), ("other", "other"))
RATES = (("create_single_per_s", "single creates/s"), ("create_batch_per_s", "batch tasks/s"),
         ("promote_per_s", "promoted tasks/s"))
REDIS_TIMES = (("create_single_redis_cpu_us", "Redis CPU per single create"),
               ("create_batch_redis_cpu_us", "Redis CPU per batch task"),
               ("promote_redis_cpu_us", "Redis CPU per promoted task"), ("idle_pass_ms", "idle promoter pass"))
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")

Line = dict[str, t.Any]


def backlog_lines(lines: t.Iterable[Line], store: str | None = None) -> list[Line]:
    return [x for x in lines if x.get("part") == "backlog" and (store is None or x["store"] == store)]


def summary(lines: t.Sequence[Line]) -> str:
    """A plain table of every point (stderr of ``bench.scale``)."""
    rows = []
    for x in backlog_lines(lines):
        f, r = x["figures"], x.get("vs_control", {})
        rows.append(f"{x['store']:<10} {x['pending']:>10,} {f['redis_bytes_per_task']:>7.1f} B/task  "
                    f"create {f['create_single_per_s']:>6,.0f}/s ({r.get('create_single_per_s', 1):.2f}x)  "
                    f"batch {f['create_batch_per_s']:>7,.0f}/s ({r.get('create_batch_per_s', 1):.2f}x)  "
                    f"promote {f['promote_per_s']:>7,.0f}/s ({r.get('promote_per_s', 1):.2f}x)  "
                    f"worker {f['worker_rss_mib']:.0f} MiB  load {x['load'][0]}  (x: / control)")
    for x in lines:
        if x.get("part") == "nodes":
            f = x["figures"]
            rows.append(f"nodes: {x['params']['workers']} worker(s), {x['params']['api_nodes']} API node(s): "
                        f"creates {f['create_per_s']:,.0f}/s, batch {f['batch_tasks_per_s']:,.0f} tasks/s, "
                        f"callbacks {f.get('callbacks_per_s') or 0:,.0f}/s  load {x['load'][0]}")
    return "\n".join(rows)


FIGURES = ("memory", "rates", "nodes")


def draw(lines: t.Sequence[Line], directory: Path, only: t.Collection[str] = FIGURES) -> list[Path]:
    """Write every figure of ``only`` the lines have data for; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    if backlog_lines(lines) and "memory" in only:
        written.append(_memory(lines, directory / "scale-memory.png"))
    if backlog_lines(lines) and "rates" in only:
        written.append(_rates(lines, directory / "scale-rates.png"))
    if any(x.get("part") == "nodes" for x in lines) and "nodes" in only:
        written.append(_nodes(lines, directory / "scale-nodes.png"))
    return written


def _caption(lines: t.Sequence[Line]) -> str:
    loads = [x["load"][0] for x in lines]
    first = lines[0]
    return (f"{first['cores']} cores, load average {min(loads):.1f}-{max(loads):.1f}, "
            f"{first['date'][:16].replace('T', ' ')} UTC")


def _memory(lines: t.Sequence[Line], path: Path) -> Path:
    import matplotlib.pyplot as plt

    kinds = sorted({x["store"] for x in backlog_lines(lines)}, key=lambda k: k != "standalone")
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.2), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        points = backlog_lines(lines, kind)
        labels = [f"{p['pending']:,.0e}".replace("+0", "") for p in points]
        bottom = [0.0] * len(points)
        for key, label in PARTS:
            values = [max(0.0, p["bytes"][key]) for p in points]
            ax.bar(labels, values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values)]
        totals = [p["bytes"]["per_task"] for p in points]
        ax.plot(labels, totals, "ko-", label="used_memory delta / tasks")
        for i, total in enumerate(totals):
            ax.annotate(f"{total:.0f}", (i, total), textcoords="offset points", xytext=(0, 6), ha="center")
        ax.axhline(GOAL_BYTES, color="red", linestyle="--", label=f"goal {GOAL_BYTES} B")
        ax.set_title(f"{kind} Redis")
        ax.set_xlabel("pending tasks")
    axes[0][0].set_ylabel("Redis bytes per pending task")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8)
    fig.suptitle(f"Redis memory per pending task ({_caption(backlog_lines(lines))})", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rates(lines: t.Sequence[Line], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = ((axes[0], RATES, "rate / control's rate"), (axes[1], REDIS_TIMES, "time / control's time"))
    kinds = sorted({x["store"] for x in backlog_lines(lines)}, key=lambda k: k != "standalone")
    for kind in kinds:
        points = backlog_lines(lines, kind)
        pending = [p["pending"] for p in points]
        style = "-" if kind == "standalone" else "--"
        for ax, series, _ in panels:
            for (key, label), color in zip(series, COLORS):
                ratios = [p.get("vs_control", {}).get(key) for p in points]
                if all(r is not None for r in ratios):
                    ax.plot(pending, ratios, style, color=color, marker="o", label=f"{label}, {kind}")
        axes[2].plot(pending, [p["figures"]["worker_rss_mib"] for p in points], style, color="tab:red",
                     marker="o", label=f"worker RSS, {kind}")
    for ax, _, ylabel in panels:
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_ylabel(ylabel)
    axes[0].set_title("create and promote rates, ratio to the control", fontsize=10)
    axes[1].set_title("Redis CPU per task and idle pass, ratio to the control", fontsize=10)
    axes[2].set_title("worker RSS (main + pool processes)", fontsize=10)
    axes[2].set_ylabel("MiB")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("pending tasks")
        ax.legend(fontsize=7)
    fig.suptitle("As the backlog grows; control: a standalone Redis with 10^4 tasks measured in alternating rounds "
                 f"({_caption(backlog_lines(lines))})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _nodes(lines: t.Sequence[Line], path: Path) -> Path:
    """One bar per combination: the median of its runs, whiskers from the lowest to the highest."""
    import matplotlib.pyplot as plt

    runs = [x for x in lines if x.get("part") == "nodes"]
    combos = sorted({(x["params"]["api_nodes"], x["params"]["workers"]) for x in runs})
    labels = [f"{w}w/{a}api" for a, w in combos]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (key, title) in zip(axes, (("create_per_s", "single creates/s (wrk, /v1/tasks)"),
                                       ("batch_tasks_per_s", "batch tasks/s (wrk, 1,000 a request)"),
                                       ("callbacks_per_s", "callbacks/s (20,000 due at once)"))):
        samples = [sorted(x["figures"].get(key) or 0 for x in runs
                          if (x["params"]["api_nodes"], x["params"]["workers"]) == combo) for combo in combos]
        medians = [v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2 for v in samples]
        errors = [[m - v[0] for m, v in zip(medians, samples)], [v[-1] - m for m, v in zip(medians, samples)]]
        ax.bar(labels, medians, yerr=errors, capsize=3,
               color="tab:green" if key == "callbacks_per_s" else "tab:blue")
        for i, v in enumerate(medians):
            ax.annotate(f"{v:,.0f}", (i, v), textcoords="offset points", xytext=(8, 3), ha="left", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    repeats = max(len([x for x in runs if (x["params"]["api_nodes"], x["params"]["workers"]) == c]) for c in combos)
    fig.suptitle(f"Workers (w) and API nodes (api) on one Redis, median of {repeats} run(s), whiskers min-max "
                 f"({_caption(runs)})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description="redraw docs/scale-*.png")
    parser.add_argument("results", help="JSON lines from python -m bench.scale --out")
    parser.add_argument("--dir", default=str(Path(__file__).resolve().parents[1] / "docs"))
    parser.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated, from: {', '.join(FIGURES)}")
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as source:
        lines = [json.loads(line) for line in source if line.strip().startswith("{")]
    print(summary(lines))
    for path in draw(lines, Path(args.dir), args.only.split(",")):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
