"""Command line of the benchmark suite.

``python -m bench.run [--scenarios create,batch,delivery,lateness,scale,baseline,intake,coldstart] [--quick]``

Prints one JSON line per scenario as it finishes (stdout), then a Markdown
table of every figure. Progress goes to stderr. The baseline, when selected,
runs first so that delivery and lateness are reported as ratios to it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from bench.report import ScenarioResult, machine, markdown
from bench.scenarios import SCENARIOS, Baseline, Config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="httpqueue benchmarks")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller and shorter (to check the suite works)")
    parser.add_argument("--hq-workers", type=int, default=1, help="httpqueue worker processes (default 1)")
    parser.add_argument("--hq-pool", default="prefork", choices=["prefork", "threads"],
                        help="pool of each httpqueue worker (default prefork: one process per core)")
    parser.add_argument("--hq-concurrency", type=int, default=0,
                        help="processes (prefork) or threads per httpqueue worker (default: httpqueue's own)")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    args.names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = (Config.quick if args.quick else Config)(hq_workers=args.hq_workers, hq_pool=args.hq_pool,
                                                      hq_concurrency=args.hq_concurrency)
    info = {**machine(), "quick": args.quick}
    base = Baseline()
    results: list[ScenarioResult] = []
    for name in [n for n in SCENARIOS if n in args.names]:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            result = SCENARIOS[name](cfg, base)
        except Exception as exc:  # report it and go on with the next scenario
            traceback.print_exc()
            result = ScenarioResult(name, error=f"{type(exc).__name__}: {exc}"[:500])
        result.params["wall_s"] = round(time.monotonic() - started, 1)
        results.append(result)
        line = result.json_line(info)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(line + "\n")
    print()
    print(f"httpqueue benchmarks, {os.cpu_count()} cores, {info['date']}{' (quick)' if args.quick else ''}")
    print()
    print(markdown(results))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
