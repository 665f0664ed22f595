"""The worker's aiohttp callback client: request bytes, the SSRF guard, limits, deadlines, TLS, redirects.

Real servers on loopback only: a raw TCP server (scripted bytes, so framing,
trickling and leftovers are exact), the suite's receiver, and a TLS server with
a certificate made here by ``openssl``. Callbacks (``delivery.http.send_async``)
and failure notices (``delivery.http.notify_async``) both go through it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gzip
import shutil
import socket
import ssl
import subprocess
import threading
import time
import typing as t
from pathlib import Path

import pytest

from httpqueue.delivery import aio, http
from httpqueue.delivery.signing import WebhookSigner, new_secret
from httpqueue.delivery.ssrf import CallbackPolicy
from httpqueue.exceptions import CallbackFailed, UnsafeCallbackError
from httpqueue.states import State
from httpqueue.store import TaskRecord

LOOPBACK = CallbackPolicy.from_strings(["127.0.0.0/8"])
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"code":100}'


@dataclasses.dataclass
class Exchange:
    connection: int  # which accepted connection carried it (1, 2, ...)
    request: bytes


class RawServer:
    """A TCP server on loopback that records raw requests and answers with scripted bytes.

    ``answer(n, request)`` gives the bytes for request number ``n`` (from 1),
    or a callable that writes to the socket itself (trickling); a connection
    is served until the client closes it, or closed after answers that set
    ``close_after``.
    """

    def __init__(self, answer: t.Callable[[int, bytes], t.Any] = lambda n, r: OK, host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.exchanges: list[Exchange] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(64)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_side=True)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def url(self, path: str = "/cb", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except ssl.SSLError:  # a client that refused the certificate
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            self._exchanges(conn, number)
        except OSError:  # the client went away
            pass

    def _exchanges(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    rest += data
                request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
                with self.lock:
                    self.exchanges.append(Exchange(number, request))
                    n = len(self.exchanges)
                answer = self.answer(n, request)
                try:
                    if callable(answer):
                        if answer(conn) == "close":
                            return
                    elif answer is None:  # reset: close without answering
                        return
                    else:
                        conn.sendall(answer)
                        if b"Connection: close" in answer.split(b"\r\n\r\n")[0]:
                            return
                except OSError:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw() -> t.Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


Clients = t.Callable[..., aio.CallbackClient]


@pytest.fixture
def clients() -> t.Iterator[Clients]:
    """Makes clients of their own (their own keep-alive connections), closed when the test ends."""
    made: list[aio.CallbackClient] = []

    def make(policy: CallbackPolicy = LOOPBACK, **kw: t.Any) -> aio.CallbackClient:
        made.append(aio.CallbackClient(policy, **kw))
        return made[-1]

    yield make
    for client in made:
        aio.run(client.close())


def task_for(url: str, **options: t.Any) -> TaskRecord:
    return TaskRecord(id="t-0123456789abcdefghij", topic="tópic", callback=url, content={"a": [1, "é"], "f": 1.5},
                      state=State.DELIVERING, execute_ms=1000, due_ms=1000, created_ms=0, max_retry=0, has_retry=0,
                      attempts=1, gen=1, options=options)


def send_async(task: TaskRecord, policy: CallbackPolicy = LOOPBACK, timeout: float = 5.0,
               follow_redirects: bool = False, signer: t.Any = None) -> http.Delivered:
    return aio.run(http.send_async(aio.client(policy), task, task.attempts, timeout=timeout,
                                   follow_redirects=follow_redirects, signer=signer))


def exchange(url: str, method: str = "POST", body: bytes = b"{}", policy: CallbackPolicy = LOOPBACK,
             timeout: float = 5.0, follow: bool = False, headers: dict[str, str] | None = None,
             client: aio.CallbackClient | None = None) -> tuple[int, bytes, str | None]:
    return aio.run((client or aio.client(policy)).exchange(method, url, body, headers or {}, timeout, follow))


def head_lines(request: bytes) -> tuple[str, set[str], bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    return first, set(lines), body


# -- the same request bytes


SENT_ALWAYS = {"Accept-Encoding", "Host", "User-Agent", "X-Httpqueue-Attempt", "X-Httpqueue-Due", "X-Httpqueue-Id",
               "X-Httpqueue-Topic", "webhook-id", "webhook-signature", "webhook-timestamp"}
"""Headers on every callback: nothing of aiohttp's own defaults (``Accept: */*``, ``Content-Length: 0``...)."""


@pytest.mark.parametrize("options", [{}, {"method": "PUT", "headers": {"X-Extra": "v", "Authorization-Hint": "x"}},
                                     {"method": "GET"}, {"method": "DELETE"}, {"method": "PATCH"}])
def test_the_request_bytes_are_exactly_httpqueues(raw: RawServer, options: dict[str, t.Any]) -> None:
    signer = WebhookSigner([new_secret()])
    task = task_for(raw.url("/cb?x=1"), **options)
    send_async(task, signer=signer)
    first, lines, body = head_lines(raw.exchanges[0].request)
    method = options.get("method", "POST")
    names = {line.split(":")[0] for line in lines}
    assert first == f"{method} /cb?x=1 HTTP/1.1"
    with_body = method not in http.BODYLESS
    assert names == SENT_ALWAYS | set(options.get("headers", {})) | (
        {"Content-Length", "Content-Type"} if with_body else set())
    assert body == (http.callback_body(task) if with_body else b"")
    assert "Accept-Encoding: identity" in lines and f"User-Agent: {http.USER_AGENT}" in lines


def test_a_failure_notice_goes_through_the_same_client(raw: RawServer) -> None:
    """POST with the task's headers plus ``X-Httpqueue-Event: failed``; any 2xx counts, anything else raises."""
    task = task_for(raw.url("/failed"))
    document = {"id": task.id, "state": "failed"}
    sent = aio.run(http.notify_async(aio.client(LOOPBACK), task.callback, task, document, timeout=5))
    assert sent.code == 200
    first, lines, body = head_lines(raw.exchanges[0].request)
    assert first == "POST /failed HTTP/1.1" and "X-Httpqueue-Event: failed" in lines
    assert body == b'{"id":"t-0123456789abcdefghij","state":"failed"}'
    raw.answer = lambda n, r: b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(CallbackFailed, match="HTTP 500"):
        aio.run(http.notify_async(aio.client(LOOPBACK), task.callback, task, document, timeout=5))
    with pytest.raises(UnsafeCallbackError):
        aio.run(http.notify_async(aio.client(CallbackPolicy()), task.callback, task, document, timeout=5))


def test_userinfo_in_the_url_is_not_sent(raw: RawServer) -> None:
    exchange(f"http://user:secret@127.0.0.1:{raw.port}/cb")
    assert b"authorization" not in raw.exchanges[0].request.lower()
    assert b"secret" not in raw.exchanges[0].request


def test_cookies_are_never_kept(clients: Clients, raw: RawServer) -> None:
    raw.answer = lambda n, r: (b"HTTP/1.1 200 OK\r\nSet-Cookie: s=1; Path=/\r\nContent-Length: 12\r\n\r\n"
                               b'{"code":100}')
    client = clients()
    exchange(raw.url(), client=client)
    exchange(raw.url(), client=client)
    assert b"cookie" not in raw.exchanges[1].request.lower()


# -- the SSRF guard at connect time


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/", "http://[::1]:{port}/", "http://localhost:{port}/",
                                 "http://2130706433:{port}/", "http://127.1:{port}/", "http://0x7f.1:{port}/"])
def test_refused_destinations_are_never_connected(raw: RawServer, url: str) -> None:
    with pytest.raises(UnsafeCallbackError):
        exchange(url.format(port=raw.port), policy=CallbackPolicy())
    assert raw.connections == 0


def test_a_refused_task_is_a_refused_failure_not_a_connection_error(raw: RawServer) -> None:
    with pytest.raises(UnsafeCallbackError, match="loopback"):
        send_async(task_for(raw.url(host="localhost")), policy=CallbackPolicy())
    assert raw.connections == 0


@pytest.mark.parametrize("allow", ["*", "127.0.0.1", "127.0.0.0/8", "localhost"])
def test_allowed_destinations_are_reached(raw: RawServer, allow: str) -> None:
    """The allow-list opens addresses (literal or resolved) and names."""
    policy = CallbackPolicy.from_strings([allow])
    host = "localhost" if allow == "localhost" else "127.0.0.1"
    assert exchange(raw.url(host=host), policy=policy)[0] == 200
    assert send_async(task_for(raw.url(host=host)), policy=policy).code == 100


def test_a_host_name_connects_to_its_checked_address(raw: RawServer) -> None:
    assert exchange(raw.url(host="localhost"))[0] == 200
    assert b"Host: localhost:" in raw.exchanges[0].request


def test_every_new_connection_resolves_again(clients: Clients, raw: RawServer) -> None:
    """No DNS cache: a host name is looked up and checked for each connection (DNS rebinding)."""
    resolved: list[str] = []

    class Counting(aio.GuardedResolver):
        async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> t.Any:
            resolved.append(host)
            return await super().resolve(host, port, family)

    raw.answer = lambda n, r: OK.replace(b"Content-Type", b"Connection: close\r\nContent-Type")
    client = clients()

    async def twice() -> None:
        session = client.session()
        connector = t.cast(t.Any, session.connector)
        assert connector.use_dns_cache is False
        connector._resolver = Counting(LOOPBACK)  # the same guard, counted
        for _ in range(2):
            await client.exchange("POST", raw.url(host="localhost"), b"{}", {}, 5, False)

    aio.run(twice())
    assert resolved == ["localhost", "localhost"] and raw.connections == 2


def test_redirects_are_not_followed_unless_asked(raw: RawServer) -> None:
    raw.answer = lambda n, r: b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n"
    assert exchange(raw.url())[0] == 302
    assert len(raw.exchanges) == 1


def test_each_redirect_hop_is_checked() -> None:
    """A hop to an address literal, and a hop to a name that resolves to a refused address, never connect."""
    first, other = RawServer(host="127.0.0.2"), RawServer()
    try:
        allowed = CallbackPolicy.from_strings(["127.0.0.2"])
        first.answer = lambda n, r: (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:%d/x\r\n"
                                     b"Content-Length: 0\r\n\r\n" % other.port)
        with pytest.raises(UnsafeCallbackError, match="127.0.0.1"):
            exchange(first.url(host="127.0.0.2"), policy=allowed, follow=True)
        first.answer = lambda n, r: (b"HTTP/1.1 302 Found\r\nLocation: http://localhost:%d/x\r\n"
                                     b"Content-Length: 0\r\n\r\n" % other.port)
        with pytest.raises(UnsafeCallbackError, match="localhost"):
            exchange(first.url(host="127.0.0.2"), policy=allowed, follow=True)
        assert len(first.exchanges) == 2 and other.connections == 0
        assert exchange(first.url(host="127.0.0.2"), policy=LOOPBACK, follow=True)[0] == 200  # allowed: followed
        assert len(other.exchanges) == 1
    finally:
        first.close()
        other.close()


def test_redirects_follow_the_usual_rules(raw: RawServer) -> None:
    """303 turns into a bodyless GET; 307 keeps the method and body; five hops, then the sixth answer is returned."""
    def answer(n: int, request: bytes) -> bytes:
        target = request.split(b" ")[1]
        if target == b"/see-other":
            return b"HTTP/1.1 303 See Other\r\nLocation: /after-303\r\nContent-Length: 0\r\n\r\n"
        if target == b"/keep":
            return b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /after-307\r\nContent-Length: 0\r\n\r\n"
        if target.startswith(b"/loop"):
            return b"HTTP/1.1 302 Found\r\nLocation: /loop%d\r\nContent-Length: 4\r\n\r\nmove" % n
        return OK

    raw.answer = answer
    headers = {"Content-Type": "application/json", "X-Keep": "1"}
    assert exchange(raw.url("/see-other"), body=b'{"a":1}', follow=True, headers=headers)[0] == 200
    first, lines, body = head_lines(raw.exchanges[-1].request)
    assert first == "GET /after-303 HTTP/1.1" and body == b"" and "X-Keep: 1" in lines
    assert not any(line.lower().startswith(("content-type", "content-length")) for line in lines)
    assert exchange(raw.url("/keep"), body=b'{"a":1}', follow=True, headers=headers)[0] == 200
    first, lines, body = head_lines(raw.exchanges[-1].request)
    assert first == "POST /after-307 HTTP/1.1" and body == b'{"a":1}'
    before = len(raw.exchanges)
    status, answer_body, _ = exchange(raw.url("/loop"), follow=True)
    assert status == 302 and answer_body == b"move" and len(raw.exchanges) - before == 1 + http.MAX_REDIRECTS


def test_a_malformed_redirect_is_a_failed_attempt(raw: RawServer) -> None:
    raw.answer = lambda n, r: b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(CallbackFailed, match="connection failed"):
        send_async(task_for(raw.url()), follow_redirects=True)


# -- one deadline, a capped answer, no reuse of a connection not read to its end, no retries


def test_a_trickled_answer_fails_at_the_deadline(raw: RawServer) -> None:
    def trickle(conn: socket.socket) -> str:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            time.sleep(0.05)
            conn.sendall(b" ")
        return "close"

    raw.answer = lambda n, r: trickle
    started = time.monotonic()
    with pytest.raises(CallbackFailed, match="no answer within 1s"):
        send_async(task_for(raw.url()), timeout=1.0)
    assert time.monotonic() - started < 1.5


def test_a_trickled_status_line_fails_at_the_deadline(raw: RawServer) -> None:
    def trickle(conn: socket.socket) -> str:
        for byte in b"HTTP/1.1 200 OK\r\n":
            time.sleep(0.1)
            conn.sendall(bytes([byte]))
        return "close"

    raw.answer = lambda n, r: trickle
    started = time.monotonic()
    with pytest.raises(CallbackFailed, match="no answer within 0.5s"):
        send_async(task_for(raw.url()), timeout=0.5)
    assert time.monotonic() - started < 1.0


def test_a_long_answer_is_cut_and_its_connection_not_reused(clients: Clients, raw: RawServer) -> None:
    big = b"x" * (3 * http.MAX_RESPONSE_BYTES)
    raw.answer = lambda n, r: (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big) if n == 1 else OK
    client = clients()
    status, body, _ = exchange(raw.url(), client=client)
    assert status == 200 and body == big[:http.MAX_RESPONSE_BYTES]
    exchange(raw.url(), client=client)
    assert [e.connection for e in raw.exchanges] == [1, 2]


def test_an_answer_read_to_its_end_keeps_the_connection(clients: Clients, raw: RawServer) -> None:
    client = clients()
    for _ in range(3):
        exchange(raw.url(), client=client)
    assert [e.connection for e in raw.exchanges] == [1, 1, 1]


def test_leftover_bytes_never_reach_the_next_callback(clients: Clients, raw: RawServer) -> None:
    """An answer with more bytes than its Content-Length: the connection is dropped, not reused."""
    raw.answer = lambda n, r: OK + b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"code\":" if n == 1 else OK
    client = clients()
    exchange(raw.url(), client=client)
    assert exchange(raw.url(), client=client)[1] == b'{"code":100}'


@pytest.mark.parametrize("method", ["PUT", "DELETE", "GET", "POST"])
def test_no_request_is_sent_twice(clients: Clients, raw: RawServer, method: str) -> None:
    """aiohttp resends an idempotent request once on a dropped connection; an attempt must not."""
    raw.answer = lambda n, r: OK if n == 1 else None  # the second request: connection closed unanswered
    client = clients()
    exchange(raw.url(), method=method, client=client)
    with pytest.raises(CallbackFailed, match="connection failed"):
        aio.run(http.send_async(client, task_for(raw.url(), method=method), 1, timeout=5))
    assert len(raw.exchanges) == 2


def test_the_session_cannot_resend(clients: Clients) -> None:
    async def flag() -> bool:
        return bool(clients().session()._retry_connection)  # type: ignore[attr-defined]

    assert aio.run(flag()) is False


def test_a_gzipped_answer_is_decoded(raw: RawServer) -> None:
    packed = gzip.compress(b'{"code":100}')
    raw.answer = lambda n, r: (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                               % len(packed) + packed)
    assert send_async(task_for(raw.url())).code == 100


def test_a_chunked_answer_is_read(raw: RawServer) -> None:
    raw.answer = lambda n, r: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"6\r\n{\"code\r\n6\r\n\":100}\r\n0\r\n\r\n")
    assert send_async(task_for(raw.url())).code == 100


def test_connection_refused_and_reset_are_connection_failures(raw: RawServer) -> None:
    from httpqueue.embedded import free_port

    with pytest.raises(CallbackFailed, match="connection failed: ConnectionRefusedError"):
        send_async(task_for(f"http://127.0.0.1:{free_port()}/"))
    raw.answer = lambda n, r: None
    with pytest.raises(CallbackFailed, match="connection failed"):
        send_async(task_for(raw.url()))


# -- TLS


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 whose certificate (from a CA made here) names only ``localhost``."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=httpqueue test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem",
        "-days", "2", "-extfile", "ext.cnf")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(d / "srv.pem", d / "srv.key")
    server = RawServer(tls=context)
    yield server.port, d / "ca.pem"
    server.close()


def test_tls_verifies_the_certificate_against_the_host_name(clients: Clients,
                                                           tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    trusting = aio.tls_context()
    trusting.load_verify_locations(ca)
    client = clients(tls=trusting)
    assert exchange(f"https://localhost:{port}/", client=client)[0] == 200  # connected to the checked 127.0.0.1
    with pytest.raises(Exception, match="(?i)certificate|hostname|IP address mismatch"):
        exchange(f"https://127.0.0.1:{port}/", client=client)  # the certificate does not name the address
    with pytest.raises(Exception, match="(?i)certificate"):
        exchange(f"https://localhost:{port}/")  # the default client does not trust the test CA


def test_preparing_the_loop_has_an_end() -> None:
    """A loop that does not answer: prepare gives up after its timeout instead of waiting for ever."""
    async def stuck() -> None:
        time.sleep(1.5)  # blocks the loop's thread, as a hung session opening would

    blocker = aio.submit(stuck())
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not open its session"):
        aio.prepare(LOOPBACK, timeout=0.3)
    assert time.monotonic() - started < 1.2
    blocker.result(timeout=5)
    aio.prepare(LOOPBACK)  # and once the loop is free, it prepares


def test_the_loop_is_the_process_own_and_run_refuses_to_block_it() -> None:
    async def inner() -> None:
        with pytest.raises(RuntimeError, match="delivery loop"):
            aio.run(asyncio.sleep(0))

    aio.run(inner())
