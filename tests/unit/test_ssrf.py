"""The SSRF guard's decisions, as pure functions (no network: resolvers are injected)."""
from __future__ import annotations

import ipaddress
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpqueue.delivery import ssrf
from httpqueue.exceptions import UnsafeCallbackError
from httpqueue.delivery.ssrf import (
    CallbackPolicy, HostCache, blocked_reason, check_url, literal_ip, redact_url, safe_addresses,
)

CLOSED = CallbackPolicy.from_strings([])


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"unexpected DNS lookup of {host}")


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1/", "loopback"),
    ("http://2130706433/", "127.0.0.1"),          # decimal IPv4
    ("http://0177.0.0.1/", "127.0.0.1"),          # octal
    ("http://0x7f.1/", "127.0.0.1"),              # hex, short form
    ("http://127.1/", "127.0.0.1"),               # short form
    ("http://017700000001/", "127.0.0.1"),        # one octal number
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),   # IPv4-mapped IPv6
    ("http://[::ffff:a00:1]/", "private"),        # mapped 10.0.0.1
    ("http://[::127.0.0.1]/", "loopback"),        # IPv4-compatible IPv6
    ("http://[2002:a00:1::]/", "private"),        # 6to4 carrying 10.0.0.1
    ("http://[64:ff9b::a9fe:a9fe]/", "carried"),  # NAT64 carrying the metadata address
    ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.0.1:8080/x", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://100.64.0.1/", "shared"),             # CGNAT
    ("http://0.0.0.0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://255.255.255.255/", "reserved"),      # broadcast
    ("http://240.0.0.1/", "reserved"),
    ("gopher://example.com/", "scheme"),
    ("file:///etc/passwd", "scheme"),
])
def test_refused_destinations(url: str, words: str) -> None:
    with pytest.raises(UnsafeCallbackError) as caught:
        check_url(url, CLOSED, resolver=no_dns)
    assert words in str(caught.value)


def test_names_are_resolved_and_every_address_must_pass() -> None:
    check_url("http://example.test/", CLOSED, resolver=lambda h, p: ["93.184.216.34"])
    with pytest.raises(UnsafeCallbackError, match="10.0.0.1"):
        check_url("http://rebind.test/", CLOSED, resolver=lambda h, p: ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(UnsafeCallbackError, match="loopback"):
        check_url("http://sneaky.test/", CLOSED, resolver=lambda h, p: ["::ffff:127.0.0.1"])


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def nxdomain(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")
    with pytest.raises(UnsafeCallbackError, match="does not resolve"):
        check_url("http://nowhere.test/", CLOSED, resolver=nxdomain)


def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(UnsafeCallbackError, match="loopback"):
        check_url("http://localhost:8080/", CLOSED)  # /etc/hosts, no DNS server involved


def test_allow_list_opens_networks_and_hosts_only() -> None:
    policy = CallbackPolicy.from_strings(["127.0.0.0/8", "::1", "10.1.0.0/16", "*.svc.internal", "hooks.lan"])
    check_url("http://127.0.0.1:9/", policy, resolver=no_dns)
    check_url("http://2130706433/", policy, resolver=no_dns)
    check_url("http://[::1]/", policy, resolver=no_dns)
    check_url("http://10.1.200.3/", policy, resolver=no_dns)
    check_url("http://a.svc.internal/", policy, resolver=no_dns)
    check_url("http://hooks.lan/", policy, resolver=no_dns)
    for url in ("http://10.2.0.1/", "http://169.254.169.254/", "http://evilhooks.lan/"):
        with pytest.raises(UnsafeCallbackError):
            check_url(url, policy, resolver=lambda h, p: ["10.9.9.9"])
    assert CallbackPolicy.from_strings(["*"]).allows_ip(ipaddress.ip_address("10.0.0.1"))


def test_connection_addresses_are_checked_at_connect_time() -> None:
    """What the guarded connection does with a name whose DNS answer changed after create."""
    assert safe_addresses("ok.test", 80, CLOSED, resolver=lambda h, p: ["93.184.216.34"]) == ["93.184.216.34"]
    with pytest.raises(UnsafeCallbackError):
        safe_addresses("ok.test", 80, CLOSED, resolver=lambda h, p: ["127.0.0.1"])


@pytest.mark.parametrize("host, expected", [("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
                                            ("10.1", "10.0.0.1"), ("[::1]", "::1"), ("example.com", None),
                                            ("1.2.3.4.5", None)])
def test_literal_ip_reads_every_form(host: str, expected: str | None) -> None:
    ip = literal_ip(host)
    assert (str(ip) if ip else None) == expected


def test_global_addresses_pass() -> None:
    assert blocked_reason(ipaddress.ip_address("93.184.216.34")) is None
    assert blocked_reason(ipaddress.ip_address("2606:4700::1111")) is None


def test_redact_url_hides_passwords_only() -> None:
    assert redact_url("https://user:hunter2@example.com/x?y=1") == "https://user:***@example.com/x?y=1"
    assert redact_url("https://example.com/x") == "https://example.com/x"


# -- the create-time check's caches: DNS once per TTL, decisions once per origin

class CountingResolver:
    """A resolver with fixed answers that counts its lookups (and can fail)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers, self.calls = answers, []  # type: ignore[var-annotated]

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise OSError("Name or service not known")
        return list(self.answers[host])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_host_name_is_resolved_once_per_ttl_and_port_not_once_per_task() -> None:
    resolver, clock = CountingResolver({"hooks.test": ["93.184.216.34"]}), Clock()
    cache = HostCache(resolver, ttl=30, clock=clock)
    policy = CallbackPolicy.from_strings([])
    for n in range(1000):
        check_url(f"https://hooks.test/cb/{n}?x={n}", policy, resolver=cache)
    check_url("https://user:pw@hooks.test/other", policy, resolver=cache)  # another origin, the same host
    assert resolver.calls == [("hooks.test", 443)]
    check_url("http://hooks.test/", policy, resolver=cache)
    assert resolver.calls == [("hooks.test", 443), ("hooks.test", 80)]
    clock.now += 29.9
    check_url("https://hooks.test/again", policy, resolver=cache)
    assert len(resolver.calls) == 2
    clock.now += 0.2  # expired: resolved again
    check_url("https://hooks.test/again", policy, resolver=cache)
    assert resolver.calls[-1] == ("hooks.test", 443) and len(resolver.calls) == 3


def test_a_changed_answer_is_seen_after_the_ttl_and_refused() -> None:
    resolver, clock = CountingResolver({"flip.test": ["93.184.216.34"]}), Clock()
    cache = HostCache(resolver, ttl=30, clock=clock)
    policy = CallbackPolicy.from_strings([])
    check_url("http://flip.test/", policy, resolver=cache)
    resolver.answers["flip.test"] = ["10.0.0.1"]
    check_url("http://flip.test/", policy, resolver=cache)  # within the TTL: the old answer
    clock.now += 31
    with pytest.raises(UnsafeCallbackError, match=r"flip.test \(10.0.0.1\) is a private address"):
        check_url("http://flip.test/", policy, resolver=cache)


def test_a_name_that_does_not_resolve_is_remembered_for_a_shorter_time() -> None:
    resolver, clock = CountingResolver({}), Clock()
    cache = HostCache(resolver, ttl=30, failure_ttl=5, clock=clock)
    policy = CallbackPolicy.from_strings([])
    for _ in range(3):
        with pytest.raises(UnsafeCallbackError, match="does not resolve: Name or service not known"):
            check_url("http://gone.test/", policy, resolver=cache)
    assert len(resolver.calls) == 1
    clock.now += 5
    resolver.answers["gone.test"] = ["93.184.216.34"]
    check_url("http://gone.test/", policy, resolver=cache)
    assert len(resolver.calls) == 2


def test_the_dns_cache_is_bounded_and_keeps_the_newest() -> None:
    resolver, clock = CountingResolver({f"h{n}.test": ["93.184.216.34"] for n in range(10)}), Clock()
    cache = HostCache(resolver, maxsize=4, clock=clock)
    for n in range(10):
        cache(f"h{n}.test", 80)
    assert len(cache._entries) == 4 and set(cache._entries) == {(f"h{n}.test", 80) for n in range(6, 10)}
    cache("h9.test", 80)
    assert len(resolver.calls) == 10


def test_the_dns_cache_is_safe_under_threads() -> None:
    resolver = CountingResolver({f"h{n}.test": ["93.184.216.34"] for n in range(50)})
    cache = HostCache(resolver, maxsize=20)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for n in range(2000):
                assert cache(f"h{n % 50}.test", 80) == ["93.184.216.34"]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(cache._entries) <= 20


def test_check_url_resolves_through_the_process_cache_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = CountingResolver({"default.test": ["93.184.216.34"]})
    monkeypatch.setattr(ssrf, "DNS_CACHE", HostCache(resolver))
    policy = CallbackPolicy.from_strings([])
    for n in range(100):
        check_url(f"http://default.test/{n}", policy)
        check_url(f"http://93.184.216.{n % 200 + 1}/x", policy)  # literals: never resolved
    assert resolver.calls == [("default.test", 80)]


def test_decisions_are_remembered_per_origin_and_policy_and_stay_the_same() -> None:
    closed, opened = CallbackPolicy.from_strings([]), CallbackPolicy.from_strings(["127.0.0.0/8"])
    for _ in range(2):  # the second round is answered from the memo: the same outcome
        check_url("http://127.0.0.1:9/a", opened, resolver=no_dns)
        with pytest.raises(UnsafeCallbackError, match="loopback"):
            check_url("http://127.0.0.1:9/b", closed, resolver=no_dns)
        with pytest.raises(UnsafeCallbackError, match="invalid port"):
            check_url("http://127.0.0.1:99999/", opened, resolver=no_dns)
        with pytest.raises(UnsafeCallbackError, match="scheme"):
            check_url("ftp://127.0.0.1/", opened, resolver=no_dns)
    assert "http://127.0.0.1:9" in opened._origins and "http://127.0.0.1:9" in closed._origins
    assert CallbackPolicy.from_strings([]) == closed and hash(CallbackPolicy.from_strings([])) == hash(closed)


@pytest.mark.parametrize("url, origin", [
    ("http://h.test/a?b#c", "http://h.test"), ("https://u:p@h.test:8443?x", "https://u:p@h.test:8443"),
    ("http://h.test#frag/x", "http://h.test"), ("http://[::1]:80/x", "http://[::1]:80"),
    ("http://h.test", "http://h.test"),
    ("http://h.test\t/x", None), (" http://h.test/", None), ("http://h .test/", None), ("mailto:x@y", None),
])
def test_the_memo_key_is_the_origin_only_when_urlsplit_would_cut_it_there(url: str, origin: str | None) -> None:
    from urllib.parse import urlsplit

    assert ssrf._origin(url) == origin
    if origin is not None:
        whole, cut = urlsplit(url), urlsplit(origin)
        assert (whole.scheme, whole.netloc) == (cut.scheme, cut.netloc)


def test_a_url_with_control_characters_is_still_checked_without_the_memo() -> None:
    with pytest.raises(UnsafeCallbackError, match="loopback"):
        check_url("http://127.0.0.1\t/x", CLOSED, resolver=no_dns)
    with pytest.raises(UnsafeCallbackError, match="loopback"):
        check_url("http://127.0.\n0.1/x", CLOSED, resolver=no_dns)  # urlsplit removes the newline


def test_the_connect_time_check_resolves_for_every_connection() -> None:
    """No cache at delivery: a name that turned private after create is refused at once (DNS rebinding)."""
    resolver = CountingResolver({"rebind.test": ["93.184.216.34"]})
    assert safe_addresses("rebind.test", 80, CLOSED, resolver=resolver) == ["93.184.216.34"]
    resolver.answers["rebind.test"] = ["127.0.0.1"]
    with pytest.raises(UnsafeCallbackError, match="loopback"):
        safe_addresses("rebind.test", 80, CLOSED, resolver=resolver)
    assert len(resolver.calls) == 2
    import inspect

    assert inspect.signature(safe_addresses).parameters["resolver"].default is ssrf.system_resolver


URL_PIECES = ["http", "https", "HTTP", "ftp", ":", "//", "/", "?", "#", "@", "[", "]", "::1", "127.0.0.1", "10.1",
              "h.test", "user", ":pw", ":80", ":99999", ":x", "\t", "\n", " ", "%", ".", "é", "\\"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(URL_PIECES), max_size=12).map("".join))
def test_a_decision_taken_for_the_origin_is_the_urls_own(url: str) -> None:
    def outcome(target: str) -> object:
        try:
            return ssrf._decide(target, CLOSED)
        except ValueError as exc:  # urlsplit's own refusals (an unbalanced bracket): not remembered
            return type(exc)

    origin = ssrf._origin(url)
    if origin is not None:
        assert outcome(origin) == outcome(url)
