"""The SSRF guard: callbacks go only where they may.

Clients choose the callback URL, so without a guard httpqueue would POST on
their behalf to its own Redis, to a cloud metadata service or to anything on
the private network. The guard refuses, unless the allow-list opens them:

* addresses that are not globally routable (loopback, private, link-local,
  CGNAT, unspecified, reserved, documentation ranges), multicast, and the
  cloud metadata addresses;
* IPv6 forms that carry such an IPv4 address (``::ffff:127.0.0.1``, the
  IPv4-compatible ``::127.0.0.1``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``);
* IPv4 written the ways the C resolver accepts (``2130706433``,
  ``0177.0.0.1``, ``0x7f.1``, ``127.1``), read as the address they mean.

It checks twice. At create time (:func:`check_url`) every address the host
name resolves to must be allowed, so the client gets a 400 at once. At
delivery time the connection itself resolves the name once, checks each
address and connects to the checked one (the callback client's resolver,
:class:`httpqueue.delivery.aio.GuardedResolver`), so a name
whose DNS answer changed since (DNS rebinding) is refused too; TLS still
verifies the certificate against the host name. Every redirect hop, when
redirects are followed at all, opens its connection the same way.

The create-time check is on the request path, so it is cheap when repeated:
an IP literal is never resolved; a host name is resolved once per
:data:`DNS_TTL` seconds per (host, port), whatever the number of tasks (a
small bounded cache, :class:`HostCache`; a failed lookup is remembered for
:data:`DNS_FAILURE_TTL`); and the policy keeps its decision for each callback
origin (scheme, userinfo, host, port: what the decision depends on) and each
resolved address, so a batch of a thousand tasks to one host parses and checks
it once. The connect-time check keeps no cache: it resolves for every
connection, which is what defeats DNS rebinding.

``requests-hardened`` was considered: it checks only the first resolved
address and can allow loopback but not chosen hosts or networks, which the
``callback_allow`` setting needs.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import threading
import time
import typing as t
import weakref
from urllib.parse import urlsplit


from httpqueue.exceptions import UnsafeCallbackError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = t.Callable[[str, int], list[str]]

#: Refused although some are nominally global: cloud metadata, NAT64, 6to4 relays, CGNAT.
ALWAYS_BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "169.254.169.254/32", "fd00:ec2::254/128", "100.64.0.0/10", "192.0.0.0/24", "192.88.99.0/24",
    "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", "5f00::/16",
))

SCHEMES = ("http", "https")

DNS_TTL = 30.0
"""Seconds the create-time check reuses a host name's addresses (the connect-time check never does)."""

DNS_FAILURE_TTL = 5.0
"""Seconds the create-time check remembers that a host name did not resolve."""

DNS_CACHE_SIZE = 1024
"""Most (host, port) pairs the create-time DNS cache holds."""

POLICY_MEMO_SIZE = 4096
"""Most origins (and, apart, addresses) a policy remembers its decision for; then it starts over."""


@dataclasses.dataclass(frozen=True)
class CallbackPolicy:
    """Which callback destinations are opened despite the guard (the ``callback_allow`` setting)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: tuple[str, ...] = ()
    allow_all: bool = False
    _origins: dict[str, tuple[t.Any, ...]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)
    """Decisions by callback origin (pure functions of the policy and the origin: see :func:`check_url`)."""
    _addresses: dict[str, tuple[IPAddress, str | None]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)
    """Each resolved address checked: the address and why it is refused (None: allowed)."""

    @classmethod
    def from_strings(cls, items: t.Iterable[str]) -> CallbackPolicy:
        """Parse entries: ``*``, IP addresses, CIDR networks, host names, ``*.example.com``."""
        networks: list[IPNetwork] = []
        hosts: list[str] = []
        for raw in items:
            item = raw.strip().lower()
            if not item:
                continue
            if item == "*":
                return cls(allow_all=True)
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.append(item.rstrip("."))
        return cls(tuple(networks), tuple(hosts))

    def allows_host(self, host: str) -> bool:
        """Whether the host name itself is opened (exact name, or a ``*.`` suffix entry)."""
        host = host.lower().rstrip(".")
        return self.allow_all or any(
            host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in self.hosts)

    def allows_ip(self, ip: IPAddress) -> bool:
        return self.allow_all or any(ip in net for net in self.networks if net.version == ip.version)

    def address_verdict(self, address: str) -> tuple[IPAddress, str | None]:
        """A resolved address, parsed, and why it is refused (None if allowed); remembered."""
        verdict = self._addresses.get(address)
        if verdict is None:
            ip = ipaddress.ip_address(address)
            verdict = (ip, None if self.allows_ip(ip) else blocked_reason(ip))
            if len(self._addresses) >= POLICY_MEMO_SIZE:
                self._addresses.clear()
            self._addresses[address] = verdict
        return verdict


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    packed = ip.packed
    if packed[:12] == bytes(12) and packed[12:] not in (bytes(4), b"\x00\x00\x00\x01"):
        return ipaddress.IPv4Address(packed[12:])  # IPv4-compatible ::a.b.c.d
    if ip in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(packed[12:])
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` may not receive callbacks, or ``None`` if it may (pure; unit-tested)."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = blocked_reason(inner)
        if reason:
            return f"{reason} (carried in {ip})"
    if any(ip in net for net in ALWAYS_BLOCKED if net.version == ip.version):
        return "a metadata, translation or shared address"
    for name, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("multicast", ip.is_multicast), ("unspecified", ip.is_unspecified),
                       ("reserved", ip.is_reserved), ("private", ip.is_private)):
        if flag:
            return f"{'an' if name[0] in 'aeiou' else 'a'} {name} address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def literal_ip(host: str) -> IPAddress | None:
    """The address a host written as an IP literal means, in any form the C resolver accepts."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host.lower()):
        try:  # decimal, octal, hex and short forms: 2130706433, 0177.0.0.1, 0x7f.1, 127.1
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (as the connection would see them)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%")[0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


class HostCache:
    """A :data:`Resolver` that remembers answers: ``ttl`` seconds, failures ``failure_ttl``, ``maxsize`` at most.

    Keyed by (host, port). Thread-safe; the lock is never held while
    resolving (two threads missing the same name at once may both resolve
    it), and it is renewed in a forked child. A failure (``OSError``,
    ``UnicodeError``) is raised again as ``OSError`` with the same message.
    """

    def __init__(self, resolver: Resolver = system_resolver, ttl: float = DNS_TTL,
                 failure_ttl: float = DNS_FAILURE_TTL, maxsize: int = DNS_CACHE_SIZE,
                 clock: t.Callable[[], float] = time.monotonic) -> None:
        self.resolver, self.ttl, self.failure_ttl, self.maxsize, self.clock = (
            resolver, ttl, failure_ttl, maxsize, clock)
        self._entries: dict[tuple[str, int], tuple[float, list[str] | None, str]] = {}
        self._lock = threading.Lock()
        _host_caches.add(self)

    def __call__(self, host: str, port: int) -> list[str]:
        key = (host, port)
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            try:
                resolved = list(self.resolver(host, port))
            except (OSError, UnicodeError) as exc:
                self._store(key, (now + self.failure_ttl, None, str(exc)), now)
                raise
            entry = (now + self.ttl, resolved, "")
            self._store(key, entry, now)
        _, addresses, error = entry
        if addresses is None:
            raise OSError(error)
        return list(addresses)

    def _store(self, key: tuple[str, int], entry: tuple[float, list[str] | None, str], now: float) -> None:
        with self._lock:
            entries = self._entries
            if key not in entries and len(entries) >= self.maxsize:
                for stale in [k for k, (expires, _, _) in entries.items() if expires <= now]:
                    del entries[stale]
                while len(entries) >= self.maxsize:  # still full: the oldest entries go
                    del entries[next(iter(entries))]
            entries[key] = entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _forked(self) -> None:
        self._lock = threading.Lock()


_host_caches: weakref.WeakSet[HostCache] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for cache in list(_host_caches):
        cache._forked()


os.register_at_fork(after_in_child=_renew_locks_in_child)

DNS_CACHE = HostCache()
"""The create-time check's resolver (:func:`check_url` without a ``resolver``)."""


def refusal(host: str, ip: IPAddress, reason: str) -> UnsafeCallbackError:
    shown = host if host.strip("[]") == str(ip) else f"{host} ({ip})"
    return UnsafeCallbackError(f"callback host {shown} is {reason}; callbacks there are refused "
                               "(open it with HTTPQUEUE_CALLBACK_ALLOW)")


def check_ip(ip: IPAddress, host: str, policy: CallbackPolicy) -> None:
    if policy.allows_ip(ip):
        return
    reason = blocked_reason(ip)
    if reason:
        raise refusal(host, ip, reason)


_ALLOWED = ("allowed",)
_REFUSED = "refused"
_RESOLVE = "resolve"


def _origin(url: str) -> str | None:
    """``scheme://netloc`` of ``url`` as :func:`urlsplit` would cut it, or None when that is not plain.

    Plain: a scheme, ``//``, and no control character or space before the
    path. Then ``urlsplit`` gives the origin the same scheme and netloc as
    the URL (it strips and removes such characters, which could move the
    cut), so a decision taken for the origin holds for every URL under it.
    """
    colon = url.find(":")
    if colon <= 0 or not url.startswith("//", colon + 1):
        return None
    end = len(url)
    for separator in "/?#":
        at = url.find(separator, colon + 3)
        if at != -1 and at < end:
            end = at
    origin = url[:end]
    return origin if origin.isprintable() and " " not in origin else None


def _decide(url: str, policy: CallbackPolicy) -> tuple[t.Any, ...]:
    """What the URL's scheme, host and port alone decide: allowed, refused (why), or resolve (host, port)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        return (_REFUSED, f"callback scheme {parts.scheme!r} is not allowed; use http or https")
    host = parts.hostname or ""
    if not host:
        return (_REFUSED, "callback URL has no host")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return (_REFUSED, "callback URL has an invalid port")
    if policy.allows_host(host):
        return _ALLOWED
    ip = literal_ip(host)  # an IP literal is decided here: never resolved
    if ip is not None:
        try:
            check_ip(ip, host, policy)
        except UnsafeCallbackError as exc:
            return (_REFUSED, str(exc))
        return _ALLOWED
    return (_RESOLVE, host, port)


def check_url(url: str, policy: CallbackPolicy, resolve: bool = True, resolver: Resolver | None = None) -> None:
    """Refuse a callback URL whose scheme, credentials or addresses are not allowed.

    Host names are resolved by ``resolver``, by default :data:`DNS_CACHE`
    (once per :data:`DNS_TTL`); IP literals never are. What does not depend
    on DNS is decided once per origin and policy (remembered by the policy).
    """
    origin = _origin(url)
    decision = policy._origins.get(origin) if origin is not None else None
    if decision is None:
        decision = _decide(origin or url, policy)
        if origin is not None:
            if len(policy._origins) >= POLICY_MEMO_SIZE:
                policy._origins.clear()
            policy._origins[origin] = decision
    kind = decision[0]
    if kind is _REFUSED:
        raise UnsafeCallbackError(decision[1])
    if kind is not _RESOLVE or not resolve:
        return
    host, port = decision[1], decision[2]
    try:
        addresses = (resolver or DNS_CACHE)(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeCallbackError(f"callback host {host} does not resolve: {exc}") from None
    if not addresses:
        raise UnsafeCallbackError(f"callback host {host} does not resolve")
    for address in addresses:
        ip, reason = policy.address_verdict(address)
        if reason:
            raise refusal(host, ip, reason)


def safe_addresses(host: str, port: int, policy: CallbackPolicy, resolver: Resolver = system_resolver) -> list[str]:
    """The addresses to connect to for ``host``: all checked, or :class:`UnsafeCallbackError`."""
    if policy.allows_host(host):
        return resolver(host, port)
    ip = literal_ip(host)
    addresses = [str(ip)] if ip is not None else resolver(host, port)
    for address in addresses:
        check_ip(ipaddress.ip_address(address), host, policy)
    return addresses


def redact_url(url: str) -> str:
    """``url`` without the password of its userinfo, for logs."""
    if "@" not in url:  # no userinfo, so no password: nothing to parse (the common case, on every create)
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:***@{netloc}").geturl()
