"""The node registry on etcd leases (:class:`~httpqueue.nodes.Registry`), used when etcd is configured.

A beat maps onto a lease: the node's first beat grants a lease of the
heartbeat's ``ttl`` (etcd rounds up to whole seconds) and writes the node's
description under it; later beats keep the lease alive and write the new load
figure. When the node stops beating, etcd's leader revokes the lease and the
key vanishes on its own: there is no expiry clock to compare, so hosts with
skewed clocks agree. A worker also writes a *known* key, on a lease of
:data:`~httpqueue.nodes.FORGET_WORKER_MS` renewed while it beats: a known worker without a live key
has departed, and a promoter releases its attempts (which stay in Redis, where
``claim.lua`` recorded them) and then removes it. API processes leave no
known key: nothing is released for them.

etcd unreachable is :class:`~httpqueue.etcd.client.EtcdUnavailable`, a
:class:`~httpqueue.exceptions.StoreUnavailable` like Redis being away: the
heartbeat is then not steady and no promoter releases anything.
"""
from __future__ import annotations

import dataclasses
import json
import math
import threading
import time

from httpqueue.etcd.client import EtcdClient, EtcdUnavailable
from httpqueue.etcd.keys import EtcdKeys
from httpqueue.nodes import FORGET_WORKER_MS, REAP_BATCH, Identity, Node, Registry, Role


KNOWN_REFRESH = 60.0
"""Seconds between two renewals of a worker's known key's lease (it lasts an hour, so a worker running longer
than that stays known, and a known worker that dies is forgotten an hour later if no promoter removed it)."""


class EtcdRegistry(Registry):
    """Live nodes as keys on their own leases under ``<prefix>run/nodes/<role>/<incarnation>``."""

    def __init__(self, client: EtcdClient, keys: EtcdKeys) -> None:
        self.client = client
        self.keys = keys
        self._leases: dict[str, int] = {}
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(Role, 0)
        self._known: dict[str, tuple[int, float]] = {}

    def beat(self, identity: Identity, load: float, ttl: float) -> None:
        description = json.dumps({**dataclasses.asdict(identity), "load": load, "seen": round(time.time(), 3)})
        key = self.keys.node(identity.role, identity.incarnation)
        with self._lock:
            lease = self._leases.get(identity.incarnation)
        if lease is None or not self.client.keepalive(lease):  # first beat, or the lease ran out meanwhile
            lease = self.client.grant(max(1, math.ceil(ttl)))
            with self._lock:
                self._leases[identity.incarnation] = lease
        if identity.role is Role.WORKER:
            self._know(identity, description)
        self.client.put(key, description, lease)

    def _know(self, identity: Identity, description: str) -> None:
        """Keep the worker's known key (and its long lease) alive, renewed every :data:`KNOWN_REFRESH` seconds."""
        with self._lock:
            lease, renewed = self._known.get(identity.incarnation, (0, float("-inf")))
        if time.monotonic() - renewed < KNOWN_REFRESH:
            return
        if not lease or not self.client.keepalive(lease):
            lease = self.client.grant(FORGET_WORKER_MS // 1000)
            self.client.put(self.keys.known(identity.role, identity.incarnation), description, lease)
        with self._lock:
            self._known[identity.incarnation] = (lease, time.monotonic())

    def leave(self, identity: Identity) -> None:
        with self._lock:
            lease = self._leases.pop(identity.incarnation, None)
            known, _ = self._known.pop(identity.incarnation, (0, 0.0))
        for held in (lease, known):
            if held:
                self.client.revoke(held)
        self.remove(identity.role, identity.incarnation)

    def live(self) -> list[Node]:
        found, _ = self.client.get_prefix(self.keys.nodes())
        listed = [node for node in (_node(kv.key.rsplit("/", 1)[1], kv.value or "") for kv in found) if node]
        return sorted(listed, key=lambda n: (n.identity.role != Role.API, n.identity.name, n.identity.started))

    def counts(self) -> dict[Role, int]:
        """Live nodes by role; while etcd is unreachable, the last counts read (``httpqueue_etcd_up`` says so).

        So that ``/metrics`` keeps answering during an etcd outage; ``live`` and
        ``departed`` raise instead (a 503 for ``/v1/nodes``, nothing released).
        """
        try:
            self._counts = super().counts()
        except EtcdUnavailable:
            pass
        return dict(self._counts)

    def departed(self, role: Role, limit: int = REAP_BATCH) -> list[str]:
        known, _ = self.client.get_prefix(self.keys.known(role))
        live, _ = self.client.get_prefix(self.keys.nodes(role))
        alive = {kv.key.rsplit("/", 1)[1] for kv in live}
        return [i for i in (kv.key.rsplit("/", 1)[1] for kv in known) if i not in alive][:limit]

    def remove(self, role: Role, incarnation: str) -> None:
        self.client.delete(self.keys.known(role, incarnation))
        self.client.delete(self.keys.node(role, incarnation))


def _node(incarnation: str, description: str) -> Node | None:
    """A listed entry; None for one whose description is unreadable (written by a newer or broken node)."""
    try:
        d = json.loads(description)
        identity = Identity(incarnation=incarnation, role=Role(d["role"]), name=str(d["name"]), host=str(d["host"]),
                            pid=int(d["pid"]), version=str(d["version"]), started=float(d["started"]))
        return Node(identity, float(d["seen"]), float(d.get("load") or 0))
    except (ValueError, KeyError, TypeError):
        return None
