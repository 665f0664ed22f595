"""A small etcd v3 client over the JSON gateway (``/v3/...``), with failover between endpoints.

Why not a client library: etcd3gw (the maintained client that works with
etcd 3.4's gateway) talks to one host, has no lease keepalive, and its watch
thread ignores cancellation and never reconnects; those are exactly the parts
httpqueue needs, so they would be written here anyway. What remains (a JSON
POST per call) is a few lines on httpx, which httpqueue already depends on.

Every call tries the endpoints in turn, starting with the last one that
answered, until one does; :class:`EtcdUnavailable` (a 503 for the API) means
none did, or the cluster has no leader. Keys and values are ``str`` here and
base64 on the wire; revisions are ints here and strings on the wire.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import threading
import typing as t

import httpx

from httpqueue.exceptions import StoreUnavailable

API = "/v3"
"""The gateway's path on etcd 3.4 (it also serves ``/v3beta``; ``/v3alpha`` is gone)."""

HAS_LEADER = {"Grpc-Metadata-hasleader": "true"}
"""Makes a watch fail when quorum is lost: without it a watch on a cut-off member stays open and silent."""

WATCH_IDLE = 30.0
"""Seconds a watch may stay silent before it is opened again (from the same revision; it costs nothing)."""


class EtcdUnavailable(StoreUnavailable):
    """No etcd endpoint answered, or the cluster has no leader; the request may be retried."""


class WatchBroken(EtcdUnavailable):
    """An established watch's connection broke (its member died): open it again from the last revision seen."""


class Compacted(EtcdUnavailable):
    """A watch asked for revisions etcd has compacted away: the caller must read everything again."""


@dataclasses.dataclass(frozen=True)
class KeyValue:
    """One key as etcd holds it; ``value`` is None for a deletion seen by a watch."""

    key: str
    value: str | None
    mod_revision: int
    create_revision: int = 0


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that makes a range or watch cover every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _kv(item: t.Mapping[str, t.Any], deleted: bool = False) -> KeyValue:
    return KeyValue(_unb64(item.get("key")), None if deleted else _unb64(item.get("value")),
                    int(item.get("mod_revision", 0)), int(item.get("create_revision", 0)))


class EtcdClient:
    """etcd's KV, transactions, leases and watches on ``endpoints`` (``http://host:port`` URLs)."""

    def __init__(self, endpoints: t.Sequence[str], timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout)
        self._first = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def _order(self) -> list[str]:
        n = len(self.endpoints)
        return [self.endpoints[(self._first + i) % n] for i in range(n)]

    def _answered(self, endpoint: str) -> None:
        with self._lock:
            self._first = self.endpoints.index(endpoint)

    def call(self, path: str, body: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that answers; its JSON answer."""
        errors: list[str] = []
        for endpoint in self._order():
            try:
                reply = self._http.post(f"{endpoint}{API}/{path}", json=body)
            except httpx.HTTPError as exc:
                errors.append(f"{endpoint}: {type(exc).__name__}")
                continue
            if reply.status_code >= 500:  # no leader, timeout inside the cluster: another member may do better
                errors.append(f"{endpoint}: {reply.status_code} {reply.text[:100]}")
                continue
            if reply.status_code != 200:
                raise EtcdUnavailable(f"etcd refused {path}: {reply.status_code} {reply.text[:200]}")
            self._answered(endpoint)
            return t.cast(dict[str, t.Any], reply.json())
        raise EtcdUnavailable("etcd is unavailable (cluster-wide settings cannot change now; retry shortly): "
                              + "; ".join(errors))

    # -- keys

    def get(self, key: str) -> KeyValue | None:
        found = self.call("kv/range", {"key": _b64(key)}).get("kvs") or []
        return _kv(found[0]) if found else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the store's revision they were read at (a linearizable read)."""
        reply = self.call("kv/range", {"key": _b64(prefix), "range_end": prefix_end(prefix)})
        return [_kv(i) for i in reply.get("kvs") or []], int(reply["header"]["revision"])

    def put(self, key: str, value: str, lease: int = 0) -> int:
        """Write ``key``; returns the new revision."""
        body: dict[str, t.Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("kv/put", body)["header"]["revision"])

    def delete(self, key: str) -> bool:
        return int(self.call("kv/deleterange", {"key": _b64(key)}).get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str) -> int:
        return int(self.call("kv/deleterange", {"key": _b64(prefix), "range_end": prefix_end(prefix)})
                   .get("deleted", 0))

    def swap(self, key: str, value: str | None, mod_revision: int, lease: int = 0) -> int:
        """Write (or, with None, delete) ``key`` only if it was last changed at ``mod_revision``.

        ``mod_revision`` 0 means "only if it does not exist". Returns the
        revision of the write, or 0 when someone else changed the key first
        (read again and redo the change).
        """
        compare = {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
        if value is None:
            op: dict[str, t.Any] = {"request_delete_range": {"key": _b64(key)}}
        else:
            op = {"request_put": {"key": _b64(key), "value": _b64(value), **({"lease": str(lease)} if lease else {})}}
        reply = self.call("kv/txn", {"compare": [compare], "success": [op]})
        return int(reply["header"]["revision"]) if reply.get("succeeded") else 0

    def create(self, key: str, value: str, lease: int = 0) -> bool:
        """Write ``key`` only if it does not exist; whether this call made it."""
        return self.swap(key, value, 0, lease) > 0

    # -- leases

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        return int(self.call("lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease: int) -> bool:
        """Extend ``lease`` by its TTL; False when it has expired already (its keys are gone)."""
        reply = self.call("lease/keepalive", {"ID": str(lease)})
        return int(reply.get("result", {}).get("TTL", 0)) > 0

    def revoke(self, lease: int) -> None:
        self.call("lease/revoke", {"ID": str(lease)})

    # -- watches

    def watch(self, prefix: str, start_revision: int, stop: threading.Event,
              idle: float = WATCH_IDLE) -> t.Iterator[tuple[int, list[KeyValue]]]:
        """Changes under ``prefix`` from ``start_revision`` on, as (revision, changed keys) batches.

        The first batch is ``(revision, [])`` once the watch is set up (so the
        caller knows etcd is there). Returns after ``idle`` silent seconds
        (open it again from the next revision); raises
        :class:`EtcdUnavailable` when no endpoint answers or quorum is lost
        (``hasleader``), :class:`Compacted` when ``start_revision`` is gone.
        """
        request = {"create_request": {"key": _b64(prefix), "range_end": prefix_end(prefix),
                                      "start_revision": str(start_revision)}}
        errors: list[str] = []
        for endpoint in self._order():
            timeout = httpx.Timeout(self.timeout, read=idle)
            established = False
            try:
                with self._http.stream("POST", f"{endpoint}{API}/watch", json=request, headers=HAS_LEADER,
                                       timeout=timeout) as reply:
                    if reply.status_code != 200:
                        errors.append(f"{endpoint}: {reply.status_code}")
                        continue
                    self._answered(endpoint)
                    established = True
                    yield from _watch_events(reply.iter_lines(), stop)
                    return
            except httpx.ReadTimeout:
                return  # silent for ``idle`` seconds: the caller opens it again
            except httpx.HTTPError as exc:
                if established:  # events were seen: only the caller knows from which revision to go on
                    raise WatchBroken(f"etcd watch on {endpoint} broke: {type(exc).__name__}") from None
                errors.append(f"{endpoint}: {type(exc).__name__}")
        raise EtcdUnavailable("etcd watch unavailable: " + "; ".join(errors))


def _watch_events(lines: t.Iterator[str], stop: threading.Event) -> t.Iterator[tuple[int, list[KeyValue]]]:
    for line in lines:
        if stop.is_set():
            return
        if not line.strip():
            continue
        message = json.loads(line)
        if "error" in message:
            raise EtcdUnavailable(f"etcd watch ended: {message['error'].get('message', message['error'])}")
        result = message.get("result", {})
        if result.get("compact_revision") and result.get("canceled"):
            raise Compacted(f"etcd compacted revisions up to {result['compact_revision']}")
        if result.get("canceled"):
            raise EtcdUnavailable(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
        events = [_kv(e["kv"], e.get("type") == "DELETE") for e in result.get("events") or []]
        yield int(result.get("header", {}).get("revision", 0)), events
