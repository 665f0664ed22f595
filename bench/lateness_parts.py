"""Where a callback's lateness goes: ``python -m bench.lateness_parts [--rate 500] [--seconds 20] [--profile]``.

The lateness scenario (``bench.run``) measures one figure per callback: its
arrival at the receiver minus its due time. This splits it, on the same stack
(httpqueue's API and one worker, the bench receiver, one Redis), by what the
worker's JSON log says of each attempt:

* ``taken``: when the worker's pool process took the task's delivery message,
  minus the due time (``taken_late_ms``; negative: early, as it should be by
  :data:`~httpqueue.publish.LEAD_MS`): the API's publish, the broker, Celery's
  ETA timer and the hand-off to a pool process;
* ``start``: when the worker started the attempt, minus the due time (the
  ``attempt`` event's ``late_ms``): the above, then the claim, the admission
  and the launcher's timer on the delivery loop;
* ``post``: the POST's own round trip as the worker timed it (``duration_ms``);
* ``arrival``: what the receiver measured; ``arrival - start`` is the way from
  the attempt's start to the receiver's clock (the connection, the request's
  bytes, the receiver's own queue).

Prints one JSON line: p50 / p99 / max of each, the paced sender's figures, the
machine's load, and with ``--profile`` the hottest frames of the worker's
processes (``py-spy record --subprocesses``, GIL samples) during the run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

from bench.load import JsonPoster, paced, random_delay, task_body
from bench.profile import py_spy, top_frames
from bench.report import machine, percentile
from bench.stack import Stack, wait_until


def attempt_events(log: Path) -> list[dict[str, t.Any]]:
    """The worker's ``attempt`` events (JSON log lines) of first attempts."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if '"attempt"' not in line or not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "attempt" and record.get("attempt") in (0, 1):
            found.append(record)
    return found


def spread(values: t.Sequence[float]) -> dict[str, float | None]:
    return {"min": round(min(values), 3) if values else None, "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": round(max(values), 3) if values else None}


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="creates per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the paced load")
    parser.add_argument("--delays", default="1-5", help="task delays in seconds, LOW-HIGH")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker during the run")
    args = parser.parse_args(argv)
    low, high = (float(x) for x in args.delays.split("-"))
    load_before = machine()
    out: dict[str, t.Any] = {"scenario": "lateness_parts", "rate": args.rate, "seconds": args.seconds,
                             "delays_s": [low, high]}
    with Stack() as stack:
        plain_env = stack.env
        stack.env = lambda: {**plain_env(), "HTTPQUEUE_LOG_FORMAT": "json"}  # type: ignore[method-assign]
        stack.start_base().start_httpqueue()
        profile_out = Path(tempfile.mkdtemp()) / "worker.txt"
        recorder = None
        if args.profile:
            recorder = subprocess.Popen(
                [py_spy(), "record", "--pid", str(stack.children["worker0"].pid), "--subprocesses", "--gil",
                 "--duration", str(int(args.seconds)), "--format", "raw", "--output", str(profile_out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        poster = JsonPoster(stack.api_url("/create"))
        url = stack.receiver.url()
        sent = paced(lambda n: poster.post(task_body(url, random_delay(low, high), n)),
                     rate=args.rate, seconds=args.seconds)
        out["sender"] = {"sent": sent.sent, "failed": sent.failed, "rate": round(sent.rate, 1),
                         "max_behind_ms": round(sent.max_behind_ms, 1)}
        wait_until(lambda: stack.receiver.stats()["count"] >= sent.sent, 60 + high, "every callback")
        arrival = stack.receiver.lateness()
        time.sleep(1.5)  # the last attempts' records reach the log
        events = attempt_events(stack.children["worker0"].log_path)
        if recorder is not None:
            recorder.wait(timeout=args.seconds + 60)
            if profile_out.exists():
                total, own, inclusive = top_frames(profile_out.read_text())
                out["worker_profile"] = {"samples": total,
                                         "self": [(f, round(100 * n / total, 1)) for f, n in own[:15]],
                                         "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive[:25]]}
    start = [float(e["late_ms"]) for e in events if e.get("late_ms") is not None]
    post = [float(e["duration_ms"]) for e in events if e.get("duration_ms") is not None]
    taken = [float(e["taken_late_ms"]) for e in events if e.get("taken_late_ms") is not None]
    out.update(arrival_ms=spread(arrival), taken_ms=spread(taken), start_ms=spread(start), post_ms=spread(post),
               attempts_logged=len(events), callbacks=len(arrival),
               machine_before=load_before, load_after=[round(x, 2) for x in __import__("os").getloadavg()])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda a: print(f"thread failed: {a.exc_value!r}", file=sys.stderr)
    sys.exit(main())
