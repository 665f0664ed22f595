"""TEMPORARY minimal SSRF guard (being replaced by the full module)."""
from __future__ import annotations

import dataclasses
import ipaddress
import typing as t

import requests
from requests.adapters import HTTPAdapter

from httpqueue.exceptions import UnsafeCallbackError


@dataclasses.dataclass(frozen=True)
class CallbackPolicy:
    allow: tuple[t.Any, ...] = ()
    allow_all: bool = False

    @classmethod
    def from_strings(cls, items: t.Iterable[str]) -> "CallbackPolicy":
        items = [i for i in items if i.strip()]
        if "*" in items:
            return cls((), True)
        return cls(tuple(ipaddress.ip_network(i, strict=False) for i in items))


def check_url(url: str, policy: CallbackPolicy, resolve: bool = True) -> None:
    from urllib.parse import urlsplit
    host = urlsplit(url).hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    if policy.allow_all or any(ip in n for n in policy.allow):
        return
    if ip.is_private or ip.is_loopback or ip.is_link_local:
        raise UnsafeCallbackError(f"callback host {host} is a private address")


def guarded_session(policy: CallbackPolicy, pool_maxsize: int = 32) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_maxsize)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
