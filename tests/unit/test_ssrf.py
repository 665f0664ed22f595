"""The SSRF guard's decisions, as pure functions (no network: resolvers are injected)."""
from __future__ import annotations

import ipaddress

import pytest

from httpqueue.exceptions import UnsafeCallbackError
from httpqueue.delivery.ssrf import CallbackPolicy, blocked_reason, check_url, literal_ip, redact_url, safe_addresses

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
