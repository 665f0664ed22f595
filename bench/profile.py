"""Where an API worker's CPU goes under load: py-spy on httpqueue's API while ``wrk`` drives one endpoint.

``python -m bench.profile [--server granian] [--path /create] [--seconds 8] [--waiting] [--out /tmp/api.svg]``

Starts its own Redis (and the receiver, for a loopback callback URL) and
``httpqueue api --server ...`` with httpqueue's defaults, warms it up, then
runs ``wrk`` (32 connections) while ``py-spy record --subprocesses --gil``
samples every process of the API (master and workers) for ``--seconds``:
only samples holding the GIL, i.e. where the Python CPU goes (``--waiting``
keeps every sample; threads blocked in a C read then count as busy). Writes
the flame graph (SVG) and prints the hottest frames: self time (the function
on top of the stack) and inclusive time (anywhere on the stack), as a share
of the samples. Needs ``py-spy`` (in the
virtualenv) and the right to trace the child processes (root, or
``kernel.yama.ptrace_scope`` 0).
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.load import task_body, wrk_post
from bench.scenarios import DAY
from bench.stack import Stack


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return found


def top_frames(raw: str, limit: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """From py-spy's collapsed stacks: total samples, the hottest frames by self and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    return total, own.most_common(limit), inclusive.most_common(limit)


def _short(frame: str) -> str:
    """``fn (path/to/site-packages/pkg/mod.py:12)`` -> ``fn (pkg/mod.py)`` (line numbers merged)."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="granian", choices=["granian", "gunicorn"])
    parser.add_argument("--path", default="/create")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--waiting", action="store_true",
                        help="every sample, not only those holding the GIL: threads blocked in C (a Redis read) "
                             "count too, py-spy cannot tell them idle")
    parser.add_argument("--out", default="", help="flame graph SVG (default: a temporary file)")
    parser.add_argument("--limit", type=int, default=25)
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="httpqueue-profile-")) / "api.svg"
    with Stack() as stack:
        stack.start_base()
        base = stack.start_api("api", [sys.executable, "-m", "httpqueue", "api", "--server", args.server])
        body = json.dumps(task_body(stack.receiver.url(), DAY))
        if args.path.endswith("/batch"):
            body = json.dumps({"tasks": [task_body(stack.receiver.url(), DAY, n) for n in range(1000)]})
        wrk_post(base + args.path, body, seconds=2, connections=args.connections)  # warm every worker
        master = stack.children["api"].pid
        load: dict[str, object] = {}
        driver = threading.Thread(target=lambda: load.update(run=wrk_post(
            base + args.path, body, seconds=args.seconds + 2, connections=args.connections)))
        driver.start()
        threading.Event().wait(1)
        common = [py_spy(), "record", "--pid", str(master), "--subprocesses", "--duration", str(int(args.seconds)),
                  "--rate", str(args.rate), "--nonblocking", *([] if args.waiting else ["--gil"])]
        raw_path = out.with_suffix(".txt")
        # two readers of the same processes at once (--nonblocking: neither stops them): stacks and flame graph
        recorders = [subprocess.Popen([*common, "--format", fmt, "--output", str(path)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
                     for fmt, path in (("raw", raw_path), ("flamegraph", out))]
        for recorder in recorders:
            recorder.wait(timeout=args.seconds + 60)
        driver.join()
    raw = raw_path.read_text()
    total, own, inclusive = top_frames(raw, args.limit)
    run = load.get("run")
    print(f"{args.server} {args.path}: {getattr(run, 'rps', 0):.0f} req/s during the profile; "
          f"{total} samples ({args.rate}/s, {'waiting included' if args.waiting else 'holding the GIL: Python CPU'})")
    print(f"flame graph: {out}; stacks: {raw_path}")
    print("\nself (on top of the stack):")
    for frame, n in own:
        print(f"  {100 * n / total:5.1f} %  {frame}")
    print("\ninclusive (anywhere on the stack):")
    for frame, n in inclusive:
        print(f"  {100 * n / total:5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
