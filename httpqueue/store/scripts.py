"""Loading the Lua scripts, sending them in one round trip, and Redis errors as 503s.

Each script lives in ``lua/<name>.lua`` with a header saying what it makes
atomic, its KEYS, ARGV and reply. ``common.lua`` (helpers) is prepended to every
script, and ``task_keys.lua`` (the task's keys by name) to the scripts that
change one task.
"""
from __future__ import annotations

import functools
import typing as t
from importlib import resources

import redis

from httpqueue.exceptions import ReplicasMissing, StoreUnavailable

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
                redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError,
                redis.exceptions.OutOfMemoryError)
"""Errors that mean "Redis is away or cannot take writes now": the API answers 503.

Out of memory belongs here: Redis refuses a script that may write before it
runs any of it (``maxmemory`` with ``noeviction``), so nothing is half-stored,
and the write succeeds once memory is freed."""

TASK_SCRIPTS = frozenset({"claim", "settle", "delete", "requeue"})
"""Scripts that change one task; they receive :meth:`TaskKeys.as_list` as KEYS."""

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def source(name: str) -> str:
    """The text of script ``name`` with the shared preludes prepended."""
    folder = resources.files("httpqueue.store") / "lua"
    parts = ["common"] + (["task_keys"] if name in TASK_SCRIPTS else []) + [name]
    return "\n".join((folder / f"{part}.lua").read_text() for part in parts)


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
    return t.cast(F, wrapper)


class ScriptCalls:
    """Lua script calls sent in one round trip.

    redis-py's pipelines check with ``SCRIPT EXISTS`` before every execute that
    runs scripts, which costs a second round trip on each create, claim and
    settle. Here the calls go out as plain ``EVALSHA``; the rare call that
    finds the script cache empty (Redis restarted or failed over) is run again
    on its own, which loads the script. A ``NOSCRIPT`` call did not run, so
    running it again is safe.
    """

    def __init__(self, client: redis.Redis, wait_replicas: int = 0, wait_timeout_ms: int = 0) -> None:
        self.client = client
        self.calls: list[tuple[t.Any, list[t.Any], list[t.Any]]] = []
        self.results: list[t.Any] = []
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    def add(self, script: t.Any, keys: list[t.Any], args: list[t.Any]) -> None:
        self.calls.append((script, keys, args))

    def execute(self) -> list[t.Any]:
        if len(self.calls) == 1 and not self.wait_replicas:
            script, keys, args = self.calls[0]
            self.results = [script(keys=keys, args=args)]
            return self.results
        results = self._send(self.calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, redis.exceptions.NoScriptError)]
        if missing:  # the script cache was empty (restart, failover): load and send just those again
            for script in {id(self.calls[i][0]): self.calls[i][0] for i in missing}.values():
                self.client.script_load(script.script)
            for i, result in zip(missing, self._send([self.calls[i] for i in missing])):
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        self.results = results
        return results

    def _send(self, calls: list[tuple[t.Any, list[t.Any], list[t.Any]]]) -> list[t.Any]:
        """One round trip; with ``wait_replicas``, ``WAIT`` on the same connection, checked."""
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        if self.wait_replicas:
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        results = pipe.execute(raise_on_error=False)
        if self.wait_replicas:
            acked = results.pop()
            if isinstance(acked, Exception) or int(acked) < self.wait_replicas:
                raise ReplicasMissing(
                    f"the write reached {acked if not isinstance(acked, Exception) else 0} of "
                    f"{self.wait_replicas} required Redis replicas within {self.wait_timeout_ms} ms; the task may "
                    "exist: retry with the same Idempotency-Key to be sure it exists once")
        return results


