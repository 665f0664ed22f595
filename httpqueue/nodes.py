"""The node registry: which API processes and workers are alive, who they are, how busy, and who died.

Every serving API process and every worker (its main process) keeps one entry,
written by a background thread once per :data:`HEARTBEAT_INTERVAL` and taken
for gone when no beat came for :data:`HEARTBEAT_TTL`. An entry is keyed by an
*incarnation*: random per start, so a worker restarted under the same name is a
new entry and its predecessor's death is still seen. Nothing on the request or
delivery path waits for the registry: the API's load figure is an in-process
counter read by the thread.

What a dead worker's entry is for: its attempts. A worker claims an attempt
under its incarnation (``claim.lua`` records it); the promoter of any live
worker asks :meth:`Registry.departed` for worker incarnations whose heartbeat
ran out, releases their attempts (``orphans.lua``, via
:meth:`~httpqueue.store.TaskStore.release_orphans`) so the next reclaim
re-issues them with a new generation, and then removes the entry. With the
defaults a killed worker's attempts are re-issued about 7 s after its death
(6 s without a beat, then at most 1 s to the next check), instead of after the
30 s attempt lease, which stays as the backstop for a worker alive but stuck.

Why 6 s, i.e. five missed beats: a beat is one small Redis call from a thread of
its own, independent of promoter passes and deliveries; on a loaded box a
Python thread waits for the GIL for milliseconds (the switch interval is 5 ms),
not seconds. Five beats in a row fail only when the process is stopped (SIGSTOP,
a paused VM, a swap storm) or cut off from Redis. A worker taken for dead by
mistake costs duplicates (its attempts then in flight are sent again), never a
loss. Two more guards against false deaths: a promoter releases nothing unless
its own heartbeat has been succeeding for a whole :data:`HEARTBEAT_TTL` (after a
Redis outage every worker first gets the chance to beat again), and never its
own incarnation.

An API node is registered per *serving process* (each granian or gunicorn
worker process), not per ``httpqueue api`` command: each process counts its own
requests and has its own pid, a process the server replaces shows up as one
leaving and one arriving, and no process has to gather figures from the
others. They share the node's ``name`` (its listen address), which is how the
dashboard and ``GET /v1/nodes`` group them. A worker is one entry: its main
process beats, and its pool processes claim under its incarnation.

The backend is a small interface (:class:`Registry`) with one implementation on
the task store's Redis (:class:`RedisRegistry`, one hash tag of its own, so it
works on a Redis Cluster). A backend on etcd would implement the same five
methods: :meth:`~Registry.beat` puts the description under a lease it keeps
alive; since etcd deletes a key whose lease ran out, a worker also writes a
second key without a lease, and :meth:`~Registry.departed` lists those whose
leased key is gone (:meth:`~Registry.remove` deletes both).
"""
from __future__ import annotations

import abc
import dataclasses
import enum
import json
import logging
import os
import secrets
import socket
import threading
import time
import typing as t

import redis

from httpqueue import __version__, events
from httpqueue.connections import StoreClient
from httpqueue.exceptions import HttpqueueError
from httpqueue.store.keys import Keys
from httpqueue.store.scripts import translate_errors

HEARTBEAT_INTERVAL = 1.0
"""Seconds between two heartbeats of a node."""

HEARTBEAT_TTL = 6.0
"""Seconds without a heartbeat after which a node is gone (five missed beats; see the module docstring)."""

REAP_INTERVAL = 1.0
"""Seconds between two looks of a worker's promoter for dead workers whose attempts to release."""

FORGET_API_MS = 0
"""How long a dead API entry is kept past its expiry: not at all (nothing depends on it)."""

FORGET_WORKER_MS = 3_600_000
"""How long a dead worker's entry is kept when no promoter removed it (no worker alive): its attempts' leases
have long run out by then."""

REAP_BATCH = 64
"""Most dead incarnations one check handles (the rest wait for the next check)."""

LOG = logging.getLogger("httpqueue.nodes")


class Role(enum.StrEnum):
    """What a node does."""

    API = "api"
    WORKER = "worker"


@dataclasses.dataclass(frozen=True)
class Identity:
    """What a node says about itself, fixed for its lifetime."""

    incarnation: str
    role: Role
    name: str
    host: str
    pid: int
    version: str
    started: float
    """Start time, epoch seconds."""


@dataclasses.dataclass(frozen=True)
class Node:
    """A live node as the registry lists it: its identity, when it last reported in, and its load figure.

    ``load`` is requests per second over the last heartbeat interval for an API
    process, attempts in flight for a worker.
    """

    identity: Identity
    last_seen: float
    """Epoch seconds of the last heartbeat (the registry's clock)."""
    load: float

    def to_dict(self) -> dict[str, t.Any]:
        return {**dataclasses.asdict(self.identity), "role": str(self.identity.role),
                "last_seen": self.last_seen, "load": self.load}


def new_identity(role: Role, name: str) -> Identity:
    """An identity for this process, with a fresh incarnation."""
    return Identity(incarnation=secrets.token_hex(8), role=role, name=name, host=socket.gethostname(),
                    pid=os.getpid(), version=__version__, started=round(time.time(), 3))


class Registry(abc.ABC):
    """Where nodes report in. Implementations: :class:`RedisRegistry`; an etcd one would map a beat to a lease."""

    @abc.abstractmethod
    def beat(self, identity: Identity, load: float, ttl: float) -> None:
        """Say ``identity`` is alive for ``ttl`` seconds more, with its current load figure."""

    @abc.abstractmethod
    def leave(self, identity: Identity) -> None:
        """Remove ``identity`` at once (a clean stop: its death is no news and releases nothing)."""

    @abc.abstractmethod
    def live(self) -> list[Node]:
        """Every node whose heartbeat has not run out, API processes first, then by name."""

    @abc.abstractmethod
    def departed(self, role: Role, limit: int = REAP_BATCH) -> list[str]:
        """Incarnations of ``role`` whose heartbeat ran out and that were not removed yet."""

    @abc.abstractmethod
    def remove(self, role: Role, incarnation: str) -> None:
        """Forget a departed incarnation (after its attempts were released)."""

    def counts(self) -> dict[Role, int]:
        """Live nodes by role (every role present, zero included)."""
        counts = dict.fromkeys(Role, 0)
        for node in self.live():
            counts[node.identity.role] += 1
        return counts


# KEYS: info hash, live set of the role. ARGV: incarnation, description (JSON), ttl ms, forget ms.
# One call: the description, the expiry by Redis's clock (hosts with skewed clocks agree), and the role's
# entries expired longer than `forget` ago removed (an API's at once; a worker's only long after, since a
# promoter must see them to release their attempts first).
_BEAT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]), 'LIMIT', 0, 100)
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[1], id)
end
return now
"""

# KEYS: info hash, then the live set of each role. Returns {now, then per role: n, (incarnation, expiry, json) x n}.
_LIST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
for i = 2, #KEYS do
  local live = redis.call('ZRANGEBYSCORE', KEYS[i], now, '+inf', 'WITHSCORES')
  out[#out + 1] = #live / 2
  for j = 1, #live, 2 do
    out[#out + 1] = live[j]
    out[#out + 1] = live[j + 1]
    out[#out + 1] = redis.call('HGET', KEYS[1], live[j]) or '{}'
  end
end
return out
"""

# KEYS: live set of a role. ARGV: limit. Incarnations whose expiry passed (Redis's clock).
_DEPARTED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

# KEYS: info hash, live set of a role. ARGV: incarnation.
_REMOVE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""


class RedisRegistry(Registry):
    """The registry in the task store's Redis, under one hash tag (``Keys.nodes_tag``).

    Redis being away is :class:`~httpqueue.exceptions.StoreUnavailable` (the API's 503).
    """

    def __init__(self, client: StoreClient, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._beat = client.register_script(_BEAT)
        self._list = client.register_script(_LIST)
        self._departed = client.register_script(_DEPARTED)
        self._remove = client.register_script(_REMOVE)

    @translate_errors
    def beat(self, identity: Identity, load: float, ttl: float) -> None:
        description = json.dumps({**dataclasses.asdict(identity), "load": load, "ttl": ttl})
        forget = FORGET_API_MS if identity.role is Role.API else FORGET_WORKER_MS
        self._beat(keys=[self.keys.nodes_info(), self.keys.nodes_live(identity.role)],
                   args=[identity.incarnation, description, int(ttl * 1000), forget])

    def leave(self, identity: Identity) -> None:
        self.remove(identity.role, identity.incarnation)

    @translate_errors
    def live(self) -> list[Node]:
        roles = list(Role)
        reply = self._list(keys=[self.keys.nodes_info(), *(self.keys.nodes_live(r) for r in roles)], args=[])
        nodes, at = [], 1
        for _ in roles:
            count = int(reply[at])
            for i in range(at + 1, at + 1 + 3 * count, 3):
                node = _node(_text(reply[i]), float(reply[i + 1]), _text(reply[i + 2]))
                if node is not None:
                    nodes.append(node)
            at += 1 + 3 * count
        return sorted(nodes, key=lambda n: (n.identity.role != Role.API, n.identity.name, n.identity.started))

    @translate_errors
    def departed(self, role: Role, limit: int = REAP_BATCH) -> list[str]:
        return [_text(i) for i in self._departed(keys=[self.keys.nodes_live(role)], args=[limit])]

    @translate_errors
    def remove(self, role: Role, incarnation: str) -> None:
        self._remove(keys=[self.keys.nodes_info(), self.keys.nodes_live(role)], args=[incarnation])


def _text(value: t.Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _node(incarnation: str, expiry_ms: float, description: str) -> Node | None:
    """A listed entry; None for one whose description is unreadable (written by a newer or broken node)."""
    try:
        d = json.loads(description)
        identity = Identity(incarnation=incarnation, role=Role(d["role"]), name=str(d["name"]),
                            host=str(d["host"]), pid=int(d["pid"]), version=str(d["version"]),
                            started=float(d["started"]))
        last_seen = (expiry_ms - float(d["ttl"]) * 1000) / 1000
        return Node(identity, round(last_seen, 3), float(d.get("load") or 0))
    except (ValueError, KeyError, TypeError):
        return None


class Heartbeat:
    """A node's heartbeat: a daemon thread that reports ``identity`` and ``load()`` every ``interval``.

    It also knows whether it has been *steady*: every beat succeeded for at
    least ``ttl`` seconds. Only a steady worker releases others' attempts
    (see :class:`Reaper`), so one coming back from a Redis outage does not
    take its peers, which could not beat either, for dead.
    """

    def __init__(self, registry: Registry, identity: Identity, load: t.Callable[[], float] = lambda: 0.0, *,
                 interval: float = HEARTBEAT_INTERVAL, ttl: float = HEARTBEAT_TTL,
                 clock: t.Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.identity = identity
        self.load = load
        self.interval = interval
        self.ttl = ttl
        self.clock = clock
        self._steady_since: float | None = None
        self._last_ok = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat_once(self) -> bool:
        """One heartbeat; False (and no longer steady) when the registry could not be reached."""
        try:
            self.registry.beat(self.identity, self.load(), self.ttl)
        except (redis.RedisError, HttpqueueError, OSError) as exc:
            if self._steady_since is not None:
                events.emit("heartbeat_error", logging.WARNING, node=self.identity.name, error=str(exc)[:300])
            self._steady_since = None
            return False
        now = self.clock()
        if self._steady_since is None or now - self._last_ok > 2 * self.interval:
            self._steady_since = now  # the first beat, or one after a gap: steady from here on
        self._last_ok = now
        return True

    def steady(self) -> bool:
        """Whether every beat of the last ``ttl`` seconds went through (and the last one is recent)."""
        now = self.clock()
        return (self._steady_since is not None and now - self._steady_since >= self.ttl
                and now - self._last_ok <= 2 * self.interval)

    def run(self, stop: threading.Event) -> None:
        """Beat until ``stop`` is set; a failed beat is retried at the next interval."""
        while not stop.is_set():
            started = self.clock()
            try:
                self.beat_once()
            except Exception:  # a bug must not end the heartbeat (the node would be taken for dead)
                LOG.exception("heartbeat failed")
            stop.wait(max(0.0, self.interval - (self.clock() - started)))

    def start(self) -> Heartbeat:
        """Run in a daemon thread (named ``httpqueue-heartbeat``)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="httpqueue-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, leave: bool = True) -> None:
        """Stop beating; with ``leave``, remove the entry now (a clean stop) rather than let it run out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if leave:
            try:
                self.registry.leave(self.identity)
            except (redis.RedisError, HttpqueueError, OSError):
                pass  # the entry runs out by itself


class Reaper:
    """Releases the attempts of dead workers; a worker's promoter calls :meth:`reap` on each pass.

    ``release(incarnation, now_ms)`` hands one dead incarnation's attempts back
    to reclaim (:meth:`~httpqueue.store.TaskStore.release_orphans`) and
    returns how many. At most one look per ``interval``; none until this
    worker's own heartbeat is steady; never this worker's own incarnation.
    """

    def __init__(self, registry: Registry, release: t.Callable[[str, int], int], heartbeat: Heartbeat, *,
                 interval: float = REAP_INTERVAL, clock: t.Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.release = release
        self.heartbeat = heartbeat
        self.interval = interval
        self.clock = clock
        self._next = float("-inf")

    def reap(self, now_ms: int) -> int:
        """Release the attempts of workers found dead since the last look; returns how many were released."""
        if self.clock() < self._next or not self.heartbeat.steady():
            return 0
        self._next = self.clock() + self.interval
        released = 0
        for incarnation in self.registry.departed(Role.WORKER):
            if incarnation == self.heartbeat.identity.incarnation:
                continue
            count = self.release(incarnation, now_ms)
            self.registry.remove(Role.WORKER, incarnation)
            released += count
            events.emit("worker_departed", logging.WARNING, incarnation=incarnation, released=count,
                        by=self.heartbeat.identity.name)
        return released


class RequestRate:
    """Requests per second of one API process: an in-process counter, read by the heartbeat thread.

    ``count`` wraps a WSGI callable (Flask's ``app.wsgi_app``); the increment is
    one attribute update without a lock (under the GIL a lost increment is rare
    and harmless for a load figure).
    """

    def __init__(self, clock: t.Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.total = 0
        self._seen = 0
        self._since = clock()

    def count(self, wsgi_app: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        def counted(environ: t.Any, start_response: t.Any) -> t.Any:
            self.total += 1
            return wsgi_app(environ, start_response)
        return counted

    def rate(self) -> float:
        """Requests per second since the previous call."""
        now, total = self.clock(), self.total
        elapsed = now - self._since
        value = (total - self._seen) / elapsed if elapsed > 0 else 0.0
        self._seen, self._since = total, now
        return round(value, 2)


_WORKER_INCARNATION = secrets.token_hex(8)
"""This worker's incarnation: drawn when the module is imported in the worker's main process, so the pool
processes forked from it claim attempts under the same one."""


def worker_identity(name: str) -> Identity:
    """The identity of this worker (the main process's pid and its incarnation)."""
    return dataclasses.replace(new_identity(Role.WORKER, name), incarnation=_WORKER_INCARNATION)


def worker_incarnation() -> str:
    """The incarnation under which this worker (any of its pool processes) claims attempts."""
    return _WORKER_INCARNATION


_api: Heartbeat | None = None
_api_lock = threading.Lock()


def serve_api(app: t.Any, client: StoreClient, keys: Keys, name: str, registry: Registry | None = None) -> Heartbeat:
    """Count ``app``'s requests and start this API process's heartbeat (once per process).

    Called by the API servers' app factory in each serving process; an app
    built by a test or embedded elsewhere registers nothing. ``registry``: the
    process context's (on etcd leases when etcd is configured); default Redis.
    """
    global _api
    with _api_lock:
        rate = RequestRate()
        app.wsgi_app = rate.count(app.wsgi_app)
        if _api is None or _api.identity.pid != os.getpid():
            _api = Heartbeat(registry or RedisRegistry(client, keys), new_identity(Role.API, name), rate.rate).start()
        else:
            _api.load = rate.rate
        return _api
