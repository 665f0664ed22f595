"""A thread's script calls go out on one connection it keeps (store/scripts.py: ``_Held``): single calls
(``call_directly``) and several in one round trip (``ScriptCalls``, a batch's calls per shard).

Counted from Redis's side (``CLIENT LIST`` by client name) on a real
``redis-server``: what matters is how many connections a process opens and
whether they go back to the pool, not the pool's internals.
"""
from __future__ import annotations

import multiprocessing
import threading
import typing as t
import uuid

import pytest
import redis

from httpqueue.embedded import EmbeddedRedis
from httpqueue.store.scripts import ScriptCalls, call_directly
from tests.support.processes import wait_until

SCRIPT = "return redis.call('INCR', KEYS[1])"
FAILING = "return redis.error_reply('refused here')"


def load(redis_server: EmbeddedRedis, *scripts: str) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    try:
        for script in scripts:
            admin.script_load(script)
    finally:
        admin.close()


@pytest.fixture
def named(redis_server: EmbeddedRedis) -> t.Iterator[tuple[redis.Redis, t.Any, str]]:
    """A client whose connections carry a name of their own, and a script registered on it."""
    name = f"held-{uuid.uuid4().hex[:8]}"
    load(redis_server, SCRIPT, FAILING)  # a NOSCRIPT would take a second connection for the load
    client = redis.Redis.from_url(redis_server.url, client_name=name, decode_responses=True)
    yield client, client.register_script(SCRIPT), name
    client.close()


def connections(redis_server: EmbeddedRedis, name: str) -> int:
    admin = redis.Redis.from_url(redis_server.url)
    try:
        return sum(1 for c in admin.client_list() if c.get("name") == name)
    finally:
        admin.close()


def in_threads(count: int, calls: int, client: redis.Redis, script: t.Any, key: str) -> None:
    """``count`` threads at once, each making ``calls`` calls (they overlap: each needs a connection)."""
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait(timeout=10)
        for _ in range(calls):
            call_directly(client, script, [key], [])
        barrier.wait(timeout=10)  # every thread still holds its connection here

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_a_thread_makes_its_calls_on_one_connection(redis_server: EmbeddedRedis,
                                                    named: tuple[redis.Redis, t.Any, str]) -> None:
    client, script, name = named
    key = f"{name}:n"
    assert [call_directly(client, script, [key], []) for _ in range(50)] == list(range(1, 51))
    assert connections(redis_server, name) == 1
    client.ping()  # another command of the client on this thread: the pool has none free, opens a second
    assert connections(redis_server, name) == 2


def test_connections_go_back_to_the_pool_when_their_threads_end(redis_server: EmbeddedRedis,
                                                                named: tuple[redis.Redis, t.Any, str]) -> None:
    client, script, name = named
    key = f"{name}:n"
    in_threads(3, 20, client, script, key)
    assert connections(redis_server, name) == 3
    in_threads(3, 20, client, script, key)  # new threads take the connections the first three gave back
    assert connections(redis_server, name) == 3
    assert int(client.get(key) or 0) == 120


def test_a_thread_turning_to_another_pool_gives_the_first_back(redis_server: EmbeddedRedis,
                                                               named: tuple[redis.Redis, t.Any, str]) -> None:
    client, script, name = named
    other = redis.Redis.from_url(redis_server.url, client_name=name + "-other", decode_responses=True)
    try:
        call_directly(client, script, [f"{name}:n"], [])
        call_directly(other, other.register_script(SCRIPT), [f"{name}:n"], [])
        client.ping()  # takes the connection the thread gave back: no new one
        assert connections(redis_server, name) == 1
        assert call_directly(client, script, [f"{name}:n"], []) == 3
    finally:
        other.close()


def test_a_killed_connection_is_replaced_and_the_call_still_runs(redis_server: EmbeddedRedis,
                                                                 named: tuple[redis.Redis, t.Any, str]) -> None:
    client, script, name = named
    key = f"{name}:n"
    assert call_directly(client, script, [key], []) == 1
    admin = redis.Redis.from_url(redis_server.url)
    try:
        ids = [c["id"] for c in admin.client_list() if c.get("name") == name]
        assert len(ids) == 1
        admin.execute_command("CLIENT", "KILL", "ID", ids[0])
    finally:
        admin.close()
    assert call_directly(client, script, [key], []) == 2  # retried by the client's policy on a new connection
    assert call_directly(client, script, [key], []) == 3
    assert connections(redis_server, name) <= 2  # the thread's, reconnected, and the one the retry took


def test_a_script_redis_lost_is_loaded_again(named: tuple[redis.Redis, t.Any, str]) -> None:
    client, script, name = named
    assert call_directly(client, script, [f"{name}:n"], []) == 1
    client.script_flush()
    assert call_directly(client, script, [f"{name}:n"], []) == 2


def test_a_script_error_leaves_the_connection_usable(redis_server: EmbeddedRedis,
                                                     named: tuple[redis.Redis, t.Any, str]) -> None:
    client, _, name = named
    failing = client.register_script(FAILING)
    counting = client.register_script(SCRIPT)
    for n in range(1, 4):
        with pytest.raises(redis.ResponseError, match="refused here"):
            call_directly(client, failing, [f"{name}:n"], [])
        assert call_directly(client, counting, [f"{name}:n"], []) == n
    assert connections(redis_server, name) == 1


def test_a_forked_child_does_not_use_the_parents_connection(redis_server: EmbeddedRedis,
                                                            named: tuple[redis.Redis, t.Any, str]) -> None:
    """The parent's held connection is not the child's: replies on a shared socket would cross."""
    client, script, name = named
    key = f"{name}:n"
    assert call_directly(client, script, [key], []) == 1
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child() -> None:  # uses the parent's client and pool, as a forked Celery or server worker would
        results.put(call_directly(client, script, [key], []))

    process = context.Process(target=child)
    process.start()
    process.join(timeout=30)
    assert process.exitcode == 0
    assert results.get(timeout=10) == 2
    assert call_directly(client, script, [key], []) == 3  # the parent's connection still in step
    wait_until(lambda: connections(redis_server, name) == 1, 10, "the child's connection to close with it")


def several(client: redis.Redis, *calls: tuple[t.Any, list[t.Any]]) -> list[t.Any]:
    """``calls`` (script, keys) in one round trip, as a batch create sends its shards' calls."""
    batch = ScriptCalls(client)
    for script, keys in calls:
        batch.add(script, keys, [])
    return batch.execute()


def test_several_calls_go_out_on_the_thread_s_connection(redis_server: EmbeddedRedis,
                                                         named: tuple[redis.Redis, t.Any, str]) -> None:
    client, script, name = named
    keys = [f"{name}:a", f"{name}:b", f"{name}:a"]
    assert several(client, *[(script, [k]) for k in keys]) == [1, 1, 2]
    assert call_directly(client, script, [keys[0]], []) == 3
    assert several(client, *[(script, [k]) for k in keys]) == [4, 2, 5]
    assert connections(redis_server, name) == 1


def test_an_error_reply_among_several_calls_stops_none_of_the_others(
        redis_server: EmbeddedRedis, named: tuple[redis.Redis, t.Any, str]) -> None:
    client, script, name = named
    failing = client.register_script(FAILING)
    key = f"{name}:n"
    with pytest.raises(redis.ResponseError, match="refused here"):
        several(client, (script, [key]), (failing, [key]), (script, [key]))
    assert int(client.get(key) or 0) == 2  # the calls around the failing one ran
    assert several(client, (script, [key])) == [3]  # every reply was read: the connection is in step
    assert several(client, (script, [key]), (script, [key])) == [4, 5]
    assert connections(redis_server, name) == 2  # the thread's, and the one client.get took


def test_several_calls_after_a_killed_connection_or_a_flushed_script_still_run(
        redis_server: EmbeddedRedis, named: tuple[redis.Redis, t.Any, str]) -> None:
    client, script, name = named
    key = f"{name}:n"
    assert several(client, (script, [key]), (script, [key])) == [1, 2]
    admin = redis.Redis.from_url(redis_server.url)
    try:
        [held] = [c["id"] for c in admin.client_list() if c.get("name") == name]
        admin.execute_command("CLIENT", "KILL", "ID", held)
    finally:
        admin.close()
    assert several(client, (script, [key]), (script, [key])) == [3, 4]  # sent again on a new connection
    client.script_flush()
    assert several(client, (script, [key]), (script, [key])) == [5, 6]  # loaded again, then run
    assert several(client, (script, [key]), (script, [key])) == [7, 8]
