"""A real HTTP callback receiver on loopback for tests, with scripted answers.

Each request is recorded (time, path, headers, JSON body). Answers are scripted
per path: a queue of :class:`Answer` consumed in order, then the path's default
(``{"code": 100}`` unless set). ``wait_for`` polls with a deadline, so tests
synchronise on events, not sleeps.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import threading
import time
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclasses.dataclass
class Answer:
    body: bytes | str | dict[str, t.Any] = dataclasses.field(default_factory=lambda: {"code": 100})
    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False  # close the connection without answering


@dataclasses.dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"

    @property
    def json(self) -> t.Any:
        return json.loads(self.body)

    @property
    def task_id(self) -> str:
        return self.headers.get("X-Httpqueue-Id", "")


class ReceiverServer(ThreadingHTTPServer):
    """A threaded HTTP server with a listen backlog a burst of new connections fits in.

    ``socketserver``'s default backlog is 5. When workers open many
    connections at once (a restarted pool process, a batch due together),
    Linux then drops the handshakes' last ACK: the client believes it is
    connected and sends its request, which the server reads only after the
    client's retransmissions, up to 15 s later. The sender has timed out and
    retried by then, so the receiver sees the first attempt after the second
    (seen in the chaos soak). Real receivers (nginx, gunicorn: 511 or 2048)
    listen with a larger backlog.
    """

    request_queue_size = 1024
    daemon_threads = True


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, collections.deque[Answer]] = collections.defaultdict(collections.deque)
        self.defaults: dict[str, Answer] = {}
        self.lock = threading.Condition()
        handler = self._handler()
        self.server = ReceiverServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, path: str, *answers: Answer) -> None:
        with self.lock:
            self.scripts[path].extend(answers)

    def default(self, path: str, answer: Answer) -> None:
        with self.lock:
            self.defaults[path] = answer

    def _answer_for(self, path: str) -> Answer:
        with self.lock:
            queue = self.scripts.get(path)
            if queue:
                return queue.popleft()
            return self.defaults.get(path, Answer())

    def for_task(self, task_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.task_id == task_id]

    def wait_for(self, predicate: t.Callable[[list[Received]], bool], timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate(list(self.requests)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"receiver: condition not met within {timeout}s; got {len(self.requests)} requests")
                self.lock.wait(min(remaining, 0.05))
            return list(self.requests)

    def wait_task(self, task_id: str, count: int = 1, timeout: float = 15.0) -> list[Received]:
        self.wait_for(lambda reqs: sum(r.task_id == task_id for r in reqs) >= count, timeout)
        return self.for_task(task_id)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(Received(time.time(), self.path, dict(self.headers), body, self.command))
                    receiver.lock.notify_all()
                answer = receiver._answer_for(self.path.split("?")[0])
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.reset:
                    self.close_connection = True
                    self.connection.close()
                    return
                payload = answer.body
                if isinstance(payload, dict):
                    payload = json.dumps(payload)
                if isinstance(payload, str):
                    payload = payload.encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:
                    pass

            do_PUT = do_PATCH = do_GET = do_DELETE = do_POST

        return Handler
