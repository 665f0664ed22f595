"""Can this service keep its promises right now? Live workers, Redis persistence, overdue tasks, exposure.

A newcomer running the API without a worker used to see every sign of health:
creates answered 200, ``/ready`` said ready and the promoter lag read 0, while
no task would ever fire. This module answers the questions that expose that,
once, for ``/ready``, ``/status``, the metrics, the create answers' warning
header and the command line:

* :func:`live_workers`: workers whose promoter reported in recently. Each
  worker keeps one member in a sorted set (``Keys.workers``) scored by the
  moment its heartbeat runs out, so the check is one command. Both sides read
  the clock of Redis (``TIME`` in a script), so hosts with skewed clocks agree.
* :func:`persistence`: whether the store's Redis writes anything to disk
  (AOF or RDB save points); ``unknown`` when ``CONFIG`` is refused (managed Redis).
* :func:`overdue`: tasks whose due time has passed and whose attempt has not
  started: parked in the timer or an hour list, or handed out (``queued``) but
  never claimed.
* :func:`exposed` / :func:`listen_warning`: an API reachable beyond loopback
  without tokens.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import threading
import time
import typing as t

import redis
from redis.cluster import RedisCluster

from httpqueue.connections import StoreClient
from httpqueue.store.keys import Keys
from httpqueue.store.scripts import ScriptCalls, prelude

NO_WORKER = "no worker is running: tasks will not fire"
"""The problem ``/ready`` and the dashboard report while no worker's heartbeat is fresh."""

NO_WORKER_WARNING = '199 httpqueue "no worker is running; the task is stored and fires when one starts"'
"""``Warning`` header (RFC 7234 section 5.5: code, agent, quoted text) on create answers while no worker is alive."""

NO_PERSISTENCE = ("the task store's Redis has no persistence (appendonly no and no RDB save points): "
                  "a Redis restart loses every task; set appendonly yes")

HEARTBEAT_MIN_TTL = 5.0
"""Shortest heartbeat lifetime in seconds: a worker is taken for dead this long after its last beat."""

FORGET_AFTER_MS = 3_600_000
"""Members of the heartbeat set this long past their expiry are removed by the next beat (dead workers' names)."""

INFLIGHT_SCAN = 256
"""In-flight entries per shard that :func:`overdue` inspects (lowest lease expiry first), bounding its cost."""

_BEAT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return now
"""

_LIVE = """
local t = redis.call('TIME')
return redis.call('ZCOUNT', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), '+inf')
"""

# KEYS: timer, inflight of one shard (one hash tag); ARGV: now, limit, task_prefix, hours, hour_list_prefix
# (the hours set is not among KEYS, as in promote.lua: a shard without far tasks has none).
# Returns {oldest overdue due time or -1, overdue count}. A queued in-flight entry is overdue when its
# due time passed (its lease may not have run out yet: that is when a promoter would re-issue it); so is a
# task still in the list of an hour that has started (no promoter moved it to the timer in time).
# common.lua (scripts.prelude) comes first: the hour list helpers.
_OVERDUE = """
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local oldest, count = -1, 0
local function late(due)
  count = count + 1
  if oldest < 0 or due < oldest then oldest = due end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[1] and tonumber(first[2]) <= now then
  oldest = tonumber(first[2])
  count = redis.call('ZCOUNT', KEYS[1], '-inf', now)
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, limit - 1)) do
  local f = redis.call('HMGET', ARGV[3] .. id, 'st', 'due')
  local due = tonumber(f[2])
  if f[1] == 'queued' and due and due <= now then late(due) end
end
local budget = limit
for _, member in ipairs(try_read('ZRANGEBYSCORE', ARGV[4], '-inf', hour_of(now), 'LIMIT', 0, limit) or {}) do
  if budget <= 0 then break end
  local hour = tonumber(member)
  local ids = try_read('LRANGE', hour_list(ARGV[5], hour), 0, budget - 1) or {}
  budget = budget - #ids
  for _, id in ipairs(ids) do
    local f = try_read('HMGET', ARGV[3] .. id, 'st', 'gen', 'due') or {}
    if waits_in_hour(f[1], f[2], f[3], hour) and tonumber(f[3]) <= now then late(tonumber(f[3])) end
  end
end
return {oldest, count}
"""


def beat(client: StoreClient, keys: Keys, name: str, ttl_ms: int) -> None:
    """Say that worker ``name`` is alive for ``ttl_ms``: its member in the heartbeat set and its own key.

    The per-worker key (``Keys.worker_heartbeat``) stays for tools and tests
    that look for one worker by name; the set answers "is any worker alive".
    The two keys may live on different nodes of a Redis Cluster, so they are
    two calls (a script cannot run in redis-py's cluster pipeline).
    """
    client.register_script(_BEAT)(keys=[keys.workers()], args=[name, ttl_ms, FORGET_AFTER_MS])
    client.set(keys.worker_heartbeat(name), int(time.time() * 1000), px=ttl_ms)


def forget(client: StoreClient, keys: Keys, name: str) -> None:
    """Remove worker ``name``'s heartbeat at once (a clean shutdown), so readiness turns without waiting."""
    pipe = client.pipeline(transaction=False)
    pipe.zrem(keys.workers(), name)
    pipe.delete(keys.worker_heartbeat(name))
    pipe.execute()


def live_workers(client: StoreClient, keys: Keys) -> int:
    """Number of workers whose heartbeat has not run out (one command, by Redis's clock)."""
    return int(client.register_script(_LIVE)(keys=[keys.workers()], args=[]))


def _text(value: t.Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def persistence(client: StoreClient) -> str:
    """What the Redis keeps on disk: ``aof``, ``rdb``, ``aof+rdb``, ``none`` or ``unknown``.

    Of a Redis Cluster, what every master keeps (asked one by one: the
    cluster client would ask one node), ``none`` if any keeps nothing.
    """
    if isinstance(client, RedisCluster):
        kinds = {node_persistence(client.get_redis_connection(node)) for node in client.get_primaries()}
        return kinds.pop() if len(kinds) == 1 else "none" if "none" in kinds else "unknown"
    return node_persistence(client)


def node_persistence(client: redis.Redis) -> str:
    """What one Redis keeps on disk (see :func:`persistence`).

    ``CONFIG GET`` tells both (``appendonly``, ``save``). Managed Redis often
    refuses ``CONFIG``; then ``INFO persistence`` still shows whether AOF is on,
    but not whether RDB save points exist, so the answer is ``aof`` or
    ``unknown``, never a false alarm. Connection errors are the caller's.
    """
    try:
        aof = _text(client.config_get("appendonly").get("appendonly"))
        save = _text(client.config_get("save").get("save"))
    except redis.ResponseError:  # CONFIG renamed, disabled or denied by an ACL
        aof = save = None
    if aof is not None and save is not None:
        kinds = [kind for kind, on in (("aof", aof == "yes"), ("rdb", bool(save.strip()))) if on]
        return "+".join(kinds) or "none"
    try:
        info = client.info("persistence")
    except redis.ResponseError:
        return "unknown"
    return "aof" if str(info.get("aof_enabled")) == "1" else "unknown"


@dataclasses.dataclass(frozen=True)
class Overdue:
    """Tasks past their due time whose attempt has not started."""

    count: int = 0
    oldest_due_ms: int | None = None

    def lag_seconds(self, now_ms: float) -> float:
        """How far the oldest overdue task is past its due time (0 when none)."""
        return 0.0 if self.oldest_due_ms is None else max(0.0, (now_ms - self.oldest_due_ms) / 1000)


def overdue(client: StoreClient, keys: Keys, now_ms: int, scan: int = INFLIGHT_SCAN) -> Overdue:
    """Overdue tasks of every shard: due in the timer or an hour list (never promoted), or queued in flight
    but never claimed.

    Whoever runs (no worker at all, or promoters and workers falling behind),
    this is how late the service is. The timer part is exact; the in-flight part
    looks at the ``scan`` entries of each shard whose leases run out first,
    where queued tasks sort by due time, and the hour-list part at ``scan``
    entries of the lists of hours already started (a promoter moves them to
    the timer an hour ahead, so they are there only while no promoter runs),
    so the count is a lower bound when a shard holds more than that. Paused
    topics' held tasks are not counted: they wait on purpose.
    """
    script = client.register_script(prelude() + _OVERDUE)
    calls = ScriptCalls(client)
    for shard in range(keys.shards):
        calls.add(script, [keys.timer(shard), keys.inflight(shard)],
                  [now_ms, scan, keys.task_prefix(shard), keys.hours(shard), keys.hour_list_prefix(shard)])
    count, oldest = 0, None
    for first, n in calls.execute():
        count += int(n)
        if int(first) >= 0:
            oldest = int(first) if oldest is None else min(oldest, int(first))
    return Overdue(count, oldest)


@dataclasses.dataclass(frozen=True)
class Report:
    """What ``/ready`` and ``/status`` say: problems make the service not ready; warnings do not."""

    workers: int
    persistence: str
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return not self.problems


def check(client: StoreClient, keys: Keys) -> Report:
    """Workers and persistence of the store behind ``client`` (Redis errors propagate: that is a 503)."""
    workers = live_workers(client, keys)
    kept = persistence(client)
    return Report(workers=workers, persistence=kept,
                  problems=() if workers else (NO_WORKER,),
                  warnings=(NO_PERSISTENCE,) if kept == "none" else ())


def persistence_warning(client: StoreClient) -> str | None:
    """:data:`NO_PERSISTENCE` if the Redis keeps nothing on disk; None if it does, is unknown or unreachable.

    For the log line at a command's start: a start is never delayed or failed by it.
    """
    try:
        return NO_PERSISTENCE if persistence(client) == "none" else None
    except redis.RedisError:
        return None


class WorkerWatch:
    """Whether any worker is alive, asked of Redis at most once per ``ttl`` seconds per process.

    The create path is hot: its warning header must not cost each create a
    Redis call. One thread refreshes while the others use the last answer.
    """

    def __init__(self, client: t.Callable[[], StoreClient], keys: Keys, ttl: float = 1.0,
                 clock: t.Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.keys = keys
        self.ttl = ttl
        self.clock = clock
        self._alive: bool | None = None
        self._until = float("-inf")
        self._refreshing = threading.Lock()

    def alive(self) -> bool | None:
        """True or False, or None when Redis could not be asked (then no one can say)."""
        if self.clock() < self._until or not self._refreshing.acquire(blocking=False):
            return self._alive
        try:
            try:
                self._alive = live_workers(self.client(), self.keys) > 0
            except redis.RedisError:
                self._alive = None
            self._until = self.clock() + self.ttl
        finally:
            self._refreshing.release()
        return self._alive


def split_address(address: str) -> tuple[str, str]:
    """``host:port`` (``:port``, ``[v6]:port``) into host and port; a bare host gets no port."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, rest.lstrip(":")
    if address.count(":") > 1:  # a bare IPv6 address
        return address, ""
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
    return host, port


def exposed(address: str) -> bool:
    """Whether an API bound to ``address`` is reachable beyond this host's loopback."""
    if address.startswith(("unix:", "fd://")):
        return False
    host, _ = split_address(address)
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # '' (every interface), '*', or a host name that may resolve anywhere
        return True


def local_url(address: str) -> str:
    """A URL that reaches an API bound to ``address`` from this host (every interface: via loopback)."""
    host, port = split_address(address)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port or '8000'}"


def listen_warning(address: str, api_tokens: t.Sequence[str], callback_allow: t.Sequence[str]) -> str | None:
    """Why listening on ``address`` is unsafe (beyond loopback without tokens), or None."""
    if not exposed(address) or any(api_tokens):
        return None
    text = (f"the API listens on {address} (beyond loopback) without HTTPQUEUE_API_TOKENS: anyone who "
            f"reaches it can create, read and delete tasks")
    if callback_allow:
        text += (f", and callbacks may reach {','.join(callback_allow)}, so it can send requests into "
                 f"this host's own network")
    return text + "; set HTTPQUEUE_API_TOKENS or listen on 127.0.0.1"
