"""Load generators: ``wrk`` for throughput, a paced sender for a steady rate.

``wrk`` (C, keep-alive, event loop) drives the create scenarios so the load
generator is not the bottleneck; a Lua script sets the POST body and prints
wrk's own summary as one JSON line. The paced sender keeps an exact rate (for
lateness) with a few threads on keep-alive ``http.client`` connections, each
request sent at its scheduled instant rather than as fast as possible.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import random
import shutil
import subprocess
import tempfile
import threading
import time
import typing as t
from urllib.parse import urlsplit

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%(body)s]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """wrk's summary: requests, wall time, errors, latency percentiles (microseconds)."""

    requests: int
    duration_us: int
    status_errors: int
    socket_errors: int
    p50_us: int
    p99_us: int
    max_us: int
    mean_us: float

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6)


def wrk_post(url: str, body: str, *, seconds: float, connections: int, threads: int = 2) -> WrkResult:
    """POST ``body`` to ``url`` as fast as ``connections`` keep-alive connections allow."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"body": body})
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "10s",
            "-s", script.name, url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return WrkResult(**json.loads(line[len("WRKJSON "):]))
    raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1000:]} {out.stderr[-1000:]}")


@dataclasses.dataclass
class PacedResult:
    """What a paced run sent: requests, failures, and how far the sender fell behind."""

    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    max_behind_ms: float = 0.0
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def paced(send: t.Callable[[int], None], *, rate: float, seconds: float, threads: int = 4) -> PacedResult:
    """Call ``send(n)`` for n = 0, 1, ... at ``rate`` per second for ``seconds``, each on schedule.

    Thread k sends the requests n = k, k + threads, ...; a request whose time
    has come is sent at once, so a slow response delays only its own thread.
    """
    total = int(rate * seconds)
    result = PacedResult()
    lock = threading.Lock()
    start = time.monotonic() + 0.1

    def run(k: int) -> None:
        for n in range(k, total, threads):
            due = start + n / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            behind = (time.monotonic() - due) * 1000
            try:
                send(n)
                ok, error = True, ""
            except Exception as exc:  # count it; the run goes on
                ok, error = False, f"{type(exc).__name__}: {exc}"
            with lock:
                result.sent += ok
                result.failed += not ok
                result.max_behind_ms = max(result.max_behind_ms, behind)
                if error and len(result.errors) < 5:
                    result.errors.append(error)

    workers = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    result.seconds = time.monotonic() - start
    return result


class JsonPoster:
    """POSTs JSON over one keep-alive connection per thread (cheaper than ``requests``)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.local = threading.local()

    def post(self, doc: t.Any) -> t.Any:
        body = json.dumps(doc).encode()
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
                continue
            if response.status >= 300:
                raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
            return json.loads(data)
        raise AssertionError("unreachable")


def task_body(callback: str, delay: float, n: int = 0, topic: str = "bench") -> dict[str, t.Any]:
    """One task as the create endpoints take it (small content, no retries)."""
    return {"topic": topic, "delay": delay, "callback": callback, "content": {"n": n}, "retry": 0}


def random_delay(low: float, high: float) -> float:
    return round(random.uniform(low, high), 3)
