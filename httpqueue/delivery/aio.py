"""The callback HTTP client of a worker process: aiohttp on one asyncio event loop thread.

A worker process used to send its callbacks on 100 threads through urllib3;
one event loop thread running aiohttp does the same work for about a third of
the CPU per callback (docs/benchmarks.rst), which is what a delivery worker is
bound by. Everything the urllib3 client guaranteed holds here too:

* **The SSRF guard at connect time.** Every new connection resolves its host
  name again (aiohttp's DNS cache is off) through :class:`GuardedResolver`,
  which checks every address with :func:`httpqueue.delivery.ssrf.safe_addresses`
  and returns only checked ones; the connector connects to those addresses
  (TLS still verifies the certificate against the host name). A host written
  as an IP literal, which aiohttp connects to without asking a resolver, is
  checked by :func:`check_literal` before each request, redirect hops
  included. The same policy decides as with urllib3 (``callback_allow``).
* **Redirects** are followed only when asked, by this module (aiohttp's own
  following is off), at most :data:`~httpqueue.delivery.http.MAX_REDIRECTS`
  hops as urllib3 did: 303 turns the request into a bodyless GET, a hop to
  another host drops ``Authorization``/``Cookie`` headers, the last redirect
  answer is returned as is when the hops are spent. Each hop is checked like
  the first request.
* **One deadline per attempt**: ``timeout`` covers the connection, the request,
  every redirect hop and the whole answer; a connection is given at most
  :data:`CONNECT_TIMEOUT` seconds to open, as before.
* **At most** :data:`~httpqueue.delivery.http.MAX_RESPONSE_BYTES` of an answer
  are read; a connection whose answer was not read to its end is closed, never
  reused.
* **No retries inside an attempt**: aiohttp's own resend of an idempotent
  request (PUT, GET, DELETE) on a dropped keep-alive connection is switched
  off; the task's retry policy decides.
* **The same request bytes** as urllib3 sent: the caller's headers, plus
  ``Host``, ``Content-Length`` and ``Accept-Encoding: identity`` and nothing
  else (no ``Accept``, no default ``Content-Type``, no cookies: the cookie jar
  keeps nothing; no credentials from the URL's userinfo, which urllib3 dropped
  too); the answer is decoded (gzip, deflate) as urllib3 decoded it. Header
  values are sent as UTF-8 (urllib3 sent Latin-1 and could not send other
  characters at all).
* **No proxy**: the session never reads proxy settings from the environment.

The loop runs in a daemon thread started on first use in each process (a
prefork child gets its own: threads do not survive a fork). Coroutines are
handed to it with :func:`submit` (the launcher) or run to their end with
:func:`run` (a caller on another thread).
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import socket
import ssl
import threading
import typing as t
import zlib
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from httpqueue.delivery.http import MAX_REDIRECTS, MAX_RESPONSE_BYTES
from httpqueue.delivery.ssrf import CallbackPolicy, literal_ip, safe_addresses
from httpqueue.exceptions import UnsafeCallbackError

T = t.TypeVar("T")

CONNECT_TIMEOUT = 5.0
"""Longest wait for a connection to open (within the attempt's own deadline), as with urllib3."""

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
"""Answers whose ``Location`` is followed when redirects are (urllib3's ``REDIRECT_STATUSES``)."""

CROSS_HOST_DROPPED = frozenset({"authorization", "cookie", "proxy-authorization"})
"""Headers not carried to a redirect hop on another host (urllib3's ``remove_headers_on_redirect``)."""

METHOD_CHANGE_DROPPED = frozenset({"content-encoding", "content-language", "content-location", "content-type",
                                   "content-length", "digest", "last-modified", "transfer-encoding"})
"""Headers a 303 drops with the body when it turns the request into a GET (as urllib3 does)."""

SKIPPED_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type")
"""aiohttp defaults that urllib3 never sent (``Accept-Encoding: identity`` is given explicitly)."""

MAX_LINE = 65_536
"""Longest status or header line accepted (``http.client``'s limit, which urllib3 had)."""

MAX_HEADERS = 128
"""Most header lines in an answer."""

_URLS_MAX = 4096
"""Callback URLs whose parsed form a client keeps (most tasks share a few URLs)."""


# -- the SSRF guard


def check_literal(host: str, port: int, policy: CallbackPolicy) -> None:
    """Refuse a host written as an address (aiohttp connects to it without a resolver) unless allowed.

    Whatever aiohttp would take for an address (anything with a colon, or only
    digits and dots) must be one the guard reads as an address and allows.
    """
    if literal_ip(host) is not None:
        _literal_addresses(host, port, policy)
    elif ":" in host or host.replace(".", "").isdigit():
        raise UnsafeCallbackError(f"callback host {host} is not a valid address; callbacks there are refused")


def _literal_addresses(host: str, port: int, policy: CallbackPolicy) -> list[str]:
    """The address an IP-literal host means, if the guard allows it (never a DNS lookup)."""
    ip = literal_ip(host)
    assert ip is not None
    return safe_addresses(host, port, policy, resolver=lambda _h, _p: [str(ip)])


class GuardedResolver(AbstractResolver):
    """Resolves a host name for each new connection and returns only addresses the policy allows.

    The lookup runs in the loop's executor (``getaddrinfo``), never cached; the
    check is :func:`~httpqueue.delivery.ssrf.safe_addresses`, the one the
    urllib3 connections used: every address must pass, or the connection is
    refused with :class:`~httpqueue.exceptions.UnsafeCallbackError`.
    """

    def __init__(self, policy: CallbackPolicy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if literal_ip(host) is not None:  # a numeric form aiohttp did not take for one (e.g. 2130706433)
            addresses = _literal_addresses(host, port, self.policy)
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found = [str(info[4][0]).split("%")[0] for info in infos
                     if info[0] in (socket.AF_INET, socket.AF_INET6)]
            addresses = safe_addresses(host, port, self.policy, resolver=lambda _h, _p: found)
        if not addresses:
            raise OSError(f"callback host {host} does not resolve")
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}
                for address in addresses]

    async def close(self) -> None:
        pass


# -- the client


class CallbackRequest(aiohttp.ClientRequest):
    """aiohttp's request, less the ``Content-Length: 0`` it adds to a bodyless DELETE (urllib3 sent none)."""

    def update_body_from_data(self, body: t.Any, *args: t.Any, **kwargs: t.Any) -> None:
        super().update_body_from_data(body, *args, **kwargs)
        if body is None and self.method == "DELETE" and self.headers.get("Content-Length") == "0":
            del self.headers["Content-Length"]


def tls_context() -> ssl.SSLContext:
    """Verifies the certificate chain and the host name, TLS 1.2 at least (as urllib3's context)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class CallbackClient:
    """One aiohttp session for one callback policy, used only on the process's delivery loop."""

    def __init__(self, policy: CallbackPolicy, tls: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self.tls = tls
        """The TLS context (default: :func:`tls_context`, the system's CAs)."""
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}
        self._allowed_literals: dict[tuple[str, int], bool] = {}
        """IP-literal destinations the policy allowed (a pure decision: the policy never changes)."""

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the loop: aiohttp binds it to the running loop
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy), use_dns_cache=False, limit=0,
                                             ssl=self.tls or tls_context())
            session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                request_class=CallbackRequest,
                skip_auto_headers=SKIPPED_AUTO_HEADERS, trust_env=False, raise_for_status=False,
                timeout=aiohttp.ClientTimeout(total=None), max_line_size=MAX_LINE, max_field_size=MAX_LINE,
                max_headers=MAX_HEADERS)
            if not hasattr(session, "_retry_connection"):  # tests/integration/test_callback_client.py checks it
                raise RuntimeError("this aiohttp cannot be told not to resend requests")
            session._retry_connection = False  # no resend of an idempotent request inside an attempt
            self._session = session
        return self._session

    def _timeout(self, timeout: float) -> aiohttp.ClientTimeout:
        found = self._timeouts.get(timeout)
        if found is None:
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            found = self._timeouts[timeout] = aiohttp.ClientTimeout(
                total=None, sock_connect=min(timeout, CONNECT_TIMEOUT))
        return found

    def _check_literal(self, host: str, port: int) -> None:
        """:func:`check_literal`, remembered for the destinations it allowed (refusals are checked each time)."""
        key = (host, port)
        if key not in self._allowed_literals:
            check_literal(host, port, self.policy)
            if len(self._allowed_literals) >= _URLS_MAX:
                self._allowed_literals.clear()
            self._allowed_literals[key] = True

    def _url(self, url: str) -> URL:
        """The URL as aiohttp takes it, without userinfo (urllib3 never sent it), parsed once per URL."""
        found = self._urls.get(url)
        if found is None:
            found = parse_url(url)
            if len(self._urls) >= _URLS_MAX:
                self._urls.clear()
            self._urls[url] = found
        return found

    async def exchange(self, method: str, url: str, body: bytes, headers: t.Mapping[str, str], timeout: float,
                       follow_redirects: bool = False) -> tuple[int, bytes, str | None]:
        """One request (and its redirects, when followed) within ``timeout``: status, body, ``Retry-After``.

        Raises :class:`UnsafeCallbackError` for a destination the guard
        refuses, :class:`asyncio.TimeoutError` when the deadline passes,
        :class:`aiohttp.ClientError` or :class:`OSError` when the exchange fails.
        """
        async with asyncio.timeout(timeout):
            return await self._exchange(method, url, body, headers, self._timeout(timeout), follow_redirects)

    async def _exchange(self, method: str, url: str, body: bytes, headers: t.Mapping[str, str],
                        timeout: aiohttp.ClientTimeout, follow_redirects: bool) -> tuple[int, bytes, str | None]:
        session = self.session()
        target = self._url(url)
        sent: t.Mapping[str, str] = {**headers, "Accept-Encoding": "identity"}
        hops = 0
        while True:
            if target.scheme not in ("http", "https"):
                raise aiohttp.InvalidURL(f"{target}: only http and https callbacks are sent")
            host = target.raw_host or ""
            self._check_literal(host, target.port or 0)
            response = await session.request(method, target, data=body or None, headers=sent,
                                              allow_redirects=False, timeout=timeout)
            try:
                location = response.headers.get("Location") if follow_redirects else None
                if location and response.status in REDIRECT_STATUSES and hops < MAX_REDIRECTS:
                    hops += 1
                    response.close()  # its body is not wanted: the connection is not reused
                    following = parse_url(location, base=target)
                    if response.status == 303:
                        method, body = "GET", b""
                        sent = {k: v for k, v in sent.items() if k.lower() not in METHOD_CHANGE_DROPPED}
                    if (following.scheme, following.raw_host, following.port) != (target.scheme, host, target.port):
                        sent = {k: v for k, v in sent.items() if k.lower() not in CROSS_HOST_DROPPED}
                    target = following
                    continue
                raw = await read_body(response)
                return response.status, raw, response.headers.get("Retry-After")
            finally:
                response.release()  # closes the connection unless the answer was read to its end

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_url(url: str, base: URL | None = None) -> URL:
    """``url`` (relative to ``base``, as urllib3 joined a redirect's ``Location``) as aiohttp takes it.

    Without userinfo (urllib3 never sent it); a malformed URL is a client error.
    """
    try:
        parsed = URL(urljoin(str(base), url) if base is not None else url)
    except (ValueError, TypeError) as exc:  # as urllib3's LocationParseError: the attempt fails, nothing raises
        raise aiohttp.InvalidURL(url) from exc
    if parsed.raw_user is not None or parsed.raw_password is not None:
        parsed = parsed.with_user(None)
    return parsed


async def read_body(response: aiohttp.ClientResponse) -> bytes:
    """At most :data:`MAX_RESPONSE_BYTES` of the answer, decoded as urllib3 decoded it (gzip, deflate).

    A body longer than that is cut, and its connection closed rather than
    reused, so a receiver's leftover bytes never reach the next callback.
    """
    content = response.content
    chunks: list[bytes] = []
    size = 0
    while size < MAX_RESPONSE_BYTES:
        chunk = await content.read(MAX_RESPONSE_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if not content.at_eof():
        response.close()
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    coding = response.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("gzip", "x-gzip", "deflate") and raw:
        raw = _decoded(raw, coding)
    return raw


def _decoded(raw: bytes, coding: str) -> bytes:
    """``raw`` decompressed (at most :data:`MAX_RESPONSE_BYTES` of output: a small bomb stays small)."""
    try:
        if coding == "deflate":
            try:  # zlib-wrapped, as the RFC says; raw deflate, as some servers send
                return zlib.decompressobj().decompress(raw, MAX_RESPONSE_BYTES)
            except zlib.error:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw, MAX_RESPONSE_BYTES)
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, MAX_RESPONSE_BYTES)
    except zlib.error as exc:
        raise aiohttp.ClientPayloadError(f"the answer could not be decoded ({coding}): {exc}") from exc


# -- the process's loop


class _Loop(t.NamedTuple):
    pid: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread


_loop: _Loop | None = None
_lock = threading.Lock()
_clients: dict[CallbackPolicy, CallbackClient] = {}
_by_object: dict[int, tuple[CallbackPolicy, CallbackClient]] = {}
"""The same, by the policy object's identity (a policy's hash covers its networks: not free per callback)."""


def _renew_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # never inherit it held by a thread that does not exist in the child
    _clients.clear()
    _by_object.clear()


os.register_at_fork(after_in_child=_renew_after_fork)


def loop() -> asyncio.AbstractEventLoop:
    """This process's delivery loop, running in its own daemon thread (started on first use)."""
    global _loop
    current = _loop
    if current is not None and current.pid == os.getpid():
        return current.loop
    with _lock:
        if _loop is None or _loop.pid != os.getpid():
            new = asyncio.new_event_loop()
            started = threading.Event()
            thread = threading.Thread(target=_run_loop, args=(new, started), name="httpqueue-callbacks",
                                      daemon=True)
            thread.start()
            started.wait()
            _loop = _Loop(os.getpid(), new, thread)  # clients made before it are bound to it on first use
        return _loop.loop


def _run_loop(event_loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(event_loop)
    event_loop.call_soon(started.set)
    event_loop.run_forever()


def client(policy: CallbackPolicy) -> CallbackClient:
    """The process's client for ``policy`` (one session, so one set of keep-alive connections, per policy)."""
    seen = _by_object.get(id(policy))
    if seen is not None and seen[0] is policy:
        return seen[1]
    with _lock:
        found = _clients.get(policy)
        if found is None:
            found = _clients[policy] = CallbackClient(policy)
        if len(_by_object) >= 256:
            _by_object.clear()
        _by_object[id(policy)] = (policy, found)
    return found


def close(timeout: float = 2.0) -> None:
    """Close this process's sessions (their keep-alive connections) on its loop, waiting up to ``timeout``."""
    current = _loop
    if current is None or current.pid != os.getpid() or not current.thread.is_alive():
        return
    clients = list(_clients.values())
    _clients.clear()
    _by_object.clear()

    async def close_all() -> None:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(close_all(), current.loop).result(timeout)
    except Exception:  # noqa: BLE001 - closing is a courtesy to the receivers; exiting goes on
        pass


atexit.register(close)


PREPARE_TIMEOUT = 10.0
"""Longest wait of :func:`prepare` for the loop to open the session (TLS certificates included)."""


def prepare(policy: CallbackPolicy, timeout: float = PREPARE_TIMEOUT) -> None:
    """Start the loop and open the session for ``policy`` now, so that the first callback does not wait for them.

    Bounded by ``timeout`` (:class:`TimeoutError`): a pool process prepares
    before it tells Celery it is up, and Celery watches only the processes it
    replaces for that, so a wait without an end here would leave a process of
    the pool's first start silent for ever.
    """
    async def open_session() -> None:
        client(policy).session()

    future = submit(open_session())
    try:
        future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"the delivery loop did not open its session within {timeout:g} s") from None


def submit(coroutine: t.Coroutine[t.Any, t.Any, T]) -> concurrent.futures.Future[T]:
    """Run ``coroutine`` on this process's delivery loop; its result comes as a future."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop())


def run(coroutine: t.Coroutine[t.Any, t.Any, T]) -> T:
    """Run ``coroutine`` on this process's delivery loop and wait for its result (never on that loop's thread)."""
    if _loop is not None and _loop.thread is threading.current_thread():
        coroutine.close()
        raise RuntimeError("run() called on the delivery loop itself; await the coroutine instead")
    return submit(coroutine).result()

