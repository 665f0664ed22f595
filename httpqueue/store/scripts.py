"""Loading the Lua scripts, sending them in one round trip, and Redis errors as 503s.

Each script lives in ``lua/<name>.lua`` with a header saying what it makes
atomic, its KEYS, ARGV and reply. ``common.lua`` (helpers) is prepended to every
script, and ``task_keys.lua`` (the task's keys by name) to the scripts that
change one task.
"""
from __future__ import annotations

import functools
import os
import threading
import time
import typing as t
from importlib import resources

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError, ClusterDownError, ClusterError, MovedError, NoScriptError, RedisClusterException, TryAgainError,
)

_hiredis_pack: t.Callable[[tuple[t.Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py then packs with its own Python serializer
    _hiredis_pack = None

from httpqueue.connections import StoreClient
from httpqueue.exceptions import ReplicasMissing, StoreUnavailable

REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError, redis.exceptions.OutOfMemoryError,
    # Redis Cluster: no master for a slot yet (failover), redirects or TRYAGAIN beyond the client's
    # patience (resharding), no node reachable; SlotNotCoveredError is a RedisClusterException
    ClusterDownError, ClusterError, TryAgainError, AskError, RedisClusterException,
)
"""Errors that mean "Redis is away or cannot take writes now": the API answers 503.

Out of memory belongs here: Redis refuses a script that may write before it
runs any of it (``maxmemory`` with ``noeviction``), so nothing is half-stored,
and the write succeeds once memory is freed. So do a Redis Cluster's states
between two topologies: a slot without a master while a replica takes over,
a slot half moved while it is resharded."""

UNSTABLE_SLOT = ("non local key", "cluster is down")
"""Words of the errors a script gets when a key it touches is half-way to another node (``Script attempted
to access a non local key``) or its slot lost its master mid-run: the call is re-sent after a pause."""

ROUTE_ATTEMPTS = 6
"""Times :class:`ScriptCalls` pauses and re-sends calls a cluster moved (MOVED) or told to wait (TRYAGAIN,
CLUSTERDOWN, a dead master); then the caller gets a 503. With the pauses below, about 2 s in all: as long
as a replica takes to replace a master with ``cluster-node-timeout`` 1 s."""

ROUTE_PAUSE = 0.05
"""Seconds of the first pause before a re-send; doubled each time up to :data:`ROUTE_PAUSE_MAX`."""

ROUTE_PAUSE_MAX = 0.5

TASK_SCRIPTS = frozenset({"claim", "settle", "delete", "requeue"})
"""Scripts that change one task; they receive :meth:`TaskKeys.as_list` as KEYS."""

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def source(name: str) -> str:
    """The text of script ``name`` with the shared preludes prepended."""
    parts = ["common"] + (["task_keys"] if name in TASK_SCRIPTS else []) + [name]
    return "\n".join(_read(part) for part in parts)


def prelude() -> str:
    """``common.lua``, for a script kept elsewhere (:mod:`httpqueue.health`) that needs its helpers."""
    return _read("common") + "\n"


@functools.lru_cache(maxsize=None)
def _read(part: str) -> str:
    return (resources.files("httpqueue.store") / "lua" / f"{part}.lua").read_text()


def register(client: t.Any, *names: str) -> dict[str, t.Any]:
    """redis-py Script objects for ``names``, by name."""
    return {name: client.register_script(source(name)) for name in names}


def translate_errors(func: F) -> F:
    """Turn Redis connectivity errors into :class:`StoreUnavailable` (the API's 503)."""
    @functools.wraps(func)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return func(*args, **kwargs)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"task store unavailable: {exc}") from exc
        except redis.ResponseError as exc:
            if unstable(exc):  # a script met a slot half moved: it stopped before writing (lua/common.lua)
                raise StoreUnavailable(f"task store unavailable: {exc}") from exc
            raise
    return t.cast(F, wrapper)


Call = tuple[t.Any, list[t.Any], list[t.Any]]
"""One script call: the redis-py Script, its KEYS, its ARGV."""


def unstable(reply: t.Any) -> bool:
    """Whether ``reply`` says the call did not run now but will on the same or another node, soon."""
    if isinstance(reply, (MovedError, AskError, TryAgainError, ClusterDownError)):
        return True
    return isinstance(reply, redis.ResponseError) and any(w in str(reply) for w in UNSTABLE_SLOT)


def _get_connection(pool: t.Any) -> t.Any:
    """``pool.get_connection()`` without redis-py's deprecated-arguments check around it.

    The check inspects every call's arguments to warn about ones this call
    never passes; it cost as much as the rest of taking a connection. Where a
    future redis-py drops the decorator, the method is called as it is.
    """
    method = type(pool).get_connection
    return getattr(method, "__wrapped__", method)(pool)


_forks = 0
"""Bumped in a forked child: a connection held before the fork belongs to the parent (:class:`_Held`)."""


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class _Held:
    """A connection a thread keeps out of its pool between its :func:`call_directly` calls.

    Taking a connection from redis-py's pool and giving it back costs about as
    much as sending the command: the fork check, the pool lock, a ``connect()``
    through the retry wrapper, a ``poll`` to see that nothing is left unread,
    and four observability counters (docs/benchmarks.rst). A thread that
    calls scripts one after another (an API server's request thread, a
    worker's) takes one connection once and keeps it. It goes back to the
    pool when the thread ends (its thread-local value is dropped), when the
    thread turns to another pool, or is forgotten in a forked child (the
    pool itself starts afresh there). A held connection stays the pool's:
    ``pool.disconnect()`` closes it too, and its next use reconnects.
    """

    __slots__ = ("pool", "connection", "forks")

    def __init__(self, pool: t.Any) -> None:
        self.pool = pool
        self.connection = _get_connection(pool)
        self.forks = _forks

    def __del__(self) -> None:
        if self.forks == _forks:
            try:
                self.pool.release(self.connection)
            except Exception:  # a pool being torn down: nothing left to give back
                pass


_thread = threading.local()


def _held_connection(pool: t.Any) -> t.Any:
    """This thread's connection of ``pool``, taken from the pool on the thread's first call."""
    held: _Held | None = getattr(_thread, "held", None)
    if held is None or held.pool is not pool or held.forks != _forks:
        _thread.held = None  # the previous one back to its pool first (_Held.__del__)
        held = _thread.held = _Held(pool)
    return held.connection


def call_directly(client: redis.Redis, script: t.Any, keys: list[t.Any], args: list[t.Any]) -> t.Any:
    """One ``EVALSHA`` on this thread's connection of ``client``, past redis-py's per-command layers.

    A single create, claim or settle is one script call; through redis-py's
    ``Script.__call__`` it passes argument deprecation checks, the retry
    wrapper, the operation-duration recorder and a pool checkout, which
    together cost about a third of the call's CPU (docs/benchmarks.rst). The
    common case (connected, script loaded) goes out here as the command and
    its reply, on the connection the thread holds (:class:`_Held`); anything
    else (a lost connection, a timeout, ``NOSCRIPT``) is handed to
    ``Script.__call__``, which reconnects, retries by the client's policy and
    loads the script. That is the path every call took before, with the same
    retry policy.
    """
    replies = _pipeline_directly(client, [("EVALSHA", script.sha, len(keys), *keys, *args)])
    if replies is not None:
        if not isinstance(replies[0], redis.ResponseError):
            return replies[0]
        if not isinstance(replies[0], NoScriptError):
            raise replies[0]
    return script(keys=keys, args=args)


def _packed(connection: t.Any, commands: list[tuple[t.Any, ...]]) -> bytes:
    """``commands`` in the Redis protocol, as redis-py sends them, in one piece.

    redis-py packs with hiredis's ``pack_command`` too, but first walks every
    argument through a generator that converts buffers: for a batch's script
    calls (some 10,000 arguments) that walk was an eighth of the request's
    CPU (docs/benchmarks.rst). Our arguments are strings, bytes and numbers.
    """
    if _hiredis_pack is not None:
        return b"".join([_hiredis_pack(command) for command in commands])
    return b"".join([chunk for command in commands for chunk in connection.pack_command(*command)])


def _pipeline_directly(client: redis.Redis, commands: list[tuple[t.Any, ...]]) -> list[t.Any] | None:
    """The replies to ``commands`` sent in one round trip on this thread's connection (:class:`_Held`),
    error replies as exceptions in place; None after a connection error or timeout, for redis-py's pipeline
    to reconnect and send them again by the client's retry policy (which is what it did before)."""
    connection = _held_connection(client.connection_pool)
    try:
        connection.send_packed_command([_packed(connection, commands)])
        replies: list[t.Any] = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:  # a whole error reply was read: the next reply follows
                replies.append(exc)
        return replies
    except BaseException as exc:
        # a reply may still be on its way (a timeout, an interrupt): the connection cannot be reused as it
        # is; disconnected, its next command reconnects
        connection.disconnect()
        if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            raise
        return None


class ScriptCalls:
    """Lua script calls sent in one round trip (one per node of a Redis Cluster).

    redis-py's pipelines check with ``SCRIPT EXISTS`` before every execute that
    runs scripts, which costs a second round trip on each create, claim and
    settle. Here the calls go out as plain ``EVALSHA``; the rare call that
    finds the script cache empty (Redis restarted or failed over) is run again
    on its own, which loads the script. A ``NOSCRIPT`` call did not run, so
    running it again is safe.

    With a Redis Cluster the calls are grouped by the node that holds their
    keys' slot and each group is a plain pipeline on that node's own client:
    redis-py's cluster pipeline refuses ``EVALSHA`` (redis-py#2914), and
    ``WAIT`` must run on the connection that wrote. A call answered by a
    redirect (``MOVED``: the slot moved; ``ASK``: it is moving) or told to wait
    (``TRYAGAIN``, a slot without a master) did not run; it is sent again to
    where the cluster now says, at most :data:`ROUTE_ATTEMPTS` rounds. The
    standalone path is the same loop with one group that never redirects.
    """

    def __init__(self, client: StoreClient, wait_replicas: int = 0, wait_timeout_ms: int = 0) -> None:
        self.client = client
        self.calls: list[Call] = []
        self.results: list[t.Any] = []
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    def add(self, script: t.Any, keys: list[t.Any], args: list[t.Any]) -> None:
        self.calls.append((script, keys, args))

    def execute(self) -> list[t.Any]:
        if len(self.calls) == 1 and not self.wait_replicas:
            script, keys, args = self.calls[0]
            if isinstance(self.client, redis.Redis):
                self.results = [call_directly(self.client, script, keys, args)]
            else:  # redis-py routes it, follows redirects, reloads a lost script
                self.results = [script(keys=keys, args=args)]
            return self.results
        results: list[t.Any] = [None] * len(self.calls)
        todo: dict[int, str | None] = {i: None for i in range(len(self.calls))}  # index -> ASK target node
        pause, waits = ROUTE_PAUSE, 0
        for _ in range(2 * ROUTE_ATTEMPTS):  # rounds that only follow an ASK or reload a script do not wait
            for (_, asking), (client, indexes) in self._groups(todo).items():
                for i, reply in zip(indexes, self._send(client, [self.calls[i] for i in indexes], asking)):
                    if isinstance(reply, NoScriptError):  # restarted, or a replica promoted since the load
                        client.script_load(self.calls[i][0].script)
                    results[i] = reply
            todo, wait = self._again(results)
            if not todo or (wait and waits == ROUTE_ATTEMPTS):
                break
            if wait:
                waits += 1
                self._refresh()
                time.sleep(pause)
                pause = min(2 * pause, ROUTE_PAUSE_MAX)
        for result in results:
            if isinstance(result, Exception):
                raise result
        self.results = results
        return results

    def _groups(self, todo: dict[int, str | None]) -> dict[tuple[str, bool], tuple[t.Any, list[int]]]:
        """The calls of ``todo`` by (node, asking): the node that holds their slot, or their ASK target."""
        if not isinstance(self.client, RedisCluster):
            return {("", False): (self.client, list(todo))}
        groups: dict[tuple[str, bool], tuple[t.Any, list[int]]] = {}
        for i, ask in todo.items():
            node: ClusterNode | None = self.client.get_node(node_name=ask) if ask else None
            asking = node is not None
            if node is None:
                node = self.client.get_node_from_key(self.calls[i][1][0])
            group = groups.setdefault((node.name, asking), (self.client.get_redis_connection(node), []))
            group[1].append(i)
        return groups

    @staticmethod
    def _again(results: list[t.Any]) -> tuple[dict[int, str | None], bool]:
        """Calls to send again (with their ASK target), and whether to refresh the slot map and pause first."""
        todo: dict[int, str | None] = {}
        wait = False
        for i, reply in enumerate(results):
            if isinstance(reply, NoScriptError):
                todo[i] = None
            elif isinstance(reply, AskError) and not isinstance(reply, MovedError):
                todo[i] = f"{reply.host}:{reply.port}"
            elif unstable(reply):
                todo[i] = None
                wait = True
        return todo, wait

    def _refresh(self) -> None:
        """Re-read the cluster's slot map after a redirect or a failover (nothing to do standalone)."""
        if isinstance(self.client, RedisCluster):
            try:
                self.client.nodes_manager.initialize()
            except REDIS_ERRORS:
                pass  # no node answers right now: the next round finds out

    def _send(self, client: redis.Redis, calls: list[Call], asking: bool = False) -> list[t.Any]:
        """One round trip to one node; with ``wait_replicas``, ``WAIT`` on the same connection, checked.

        A node that refuses the connection (a dead master) is the cluster's
        to replace: its calls are answered ``CLUSTERDOWN`` and sent again.
        """
        commands: list[tuple[t.Any, ...]] = []
        for script, keys, args in calls:
            if asking:
                commands.append(("ASKING",))
            commands.append(("EVALSHA", script.sha, len(keys), *keys, *args))
        if self.wait_replicas:
            commands.append(("WAIT", self.wait_replicas, self.wait_timeout_ms))
        # standalone: on this thread's connection, past redis-py's pipeline (a cluster's node clients change
        # from call to call, and hold no connection per thread)
        results = _pipeline_directly(client, commands) if client is self.client else None
        if results is None:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            try:
                results = pipe.execute(raise_on_error=False)
            except redis.ConnectionError as exc:
                if not isinstance(self.client, RedisCluster) or not _refused(exc):
                    raise
                return [ClusterDownError(f"CLUSTERDOWN {exc}")] * len(calls)
        if asking:
            results = [r for n, r in enumerate(results) if n % 2 or n >= 2 * len(calls)]
        if self.wait_replicas:
            acked = results.pop()
            done = [r for r in results if not isinstance(r, Exception)]
            if done and (isinstance(acked, Exception) or int(acked) < self.wait_replicas):
                raise ReplicasMissing(
                    f"the write reached {acked if not isinstance(acked, Exception) else 0} of "
                    f"{self.wait_replicas} required Redis replicas within {self.wait_timeout_ms} ms; the task may "
                    "exist: retry with the same Idempotency-Key to be sure it exists once")
        return results


def _refused(exc: redis.ConnectionError) -> bool:
    """Whether the connection was refused before anything was sent (so nothing ran)."""
    return "refused" in str(exc).lower() or "connecting to" in str(exc).lower()
