"""A RabbitMQ virtual host of the test session's own on the machine's RabbitMQ (127.0.0.1:5672).

The suite never touches the default vhost ``/``: each session adds
``hq-test-<random>`` with ``rabbitmqctl`` (guest gets every permission on it),
and deletes it, queues and all, at the end. ``close_connections`` drops the
connections of that vhost only, which is how the fault tests cut the broker
away from the API and the workers without disturbing anyone else's.

Tests that need it use the ``rabbitmq`` fixture (the session's vhost) or
``rabbitmq_vhost`` (a vhost of the test's own, for a test that runs a whole
service of its own: two services must not share a queue); import them into
the test module (``from tests.support.rabbitmq import rabbitmq``). Both skip
the test when ``rabbitmqctl`` is missing or RabbitMQ does not answer.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import typing as t
import uuid

import pytest

HOST, PORT = "127.0.0.1", 5672
USER = PASSWORD = "guest"
CTL_TIMEOUT = 60.0
"""Seconds a ``rabbitmqctl`` call may take (it starts an Erlang VM: about a second on a quiet box)."""


def ctl(*args: str) -> str:
    """Run ``rabbitmqctl`` (silent: no banner, no headers; tab-separated) and return its standard output."""
    done = subprocess.run(["rabbitmqctl", "--silent", *args], capture_output=True, text=True, timeout=CTL_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def available() -> str | None:
    """Why RabbitMQ cannot be used here, or None if it can."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed"
    try:
        socket.create_connection((HOST, PORT), timeout=2).close()
    except OSError as exc:
        return f"RabbitMQ does not answer on {HOST}:{PORT}: {exc}"
    return None


class VHost:
    """A virtual host added for the session; ``url`` is the broker URL that reaches it."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"hq-test-{uuid.uuid4().hex[:10]}"
        if self.name == "/":
            raise ValueError("the default vhost is never used by tests")

    @property
    def url(self) -> str:
        return f"amqp://{USER}:{PASSWORD}@{HOST}:{PORT}/{self.name}"

    def create(self) -> VHost:
        ctl("add_vhost", self.name)
        ctl("set_permissions", "-p", self.name, USER, ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        ctl("delete_vhost", self.name)

    def connections(self) -> list[str]:
        """Erlang process ids of the client connections open on this vhost (and no other).

        ``rabbitmqctl close_connection`` wants the pid (``<rabbit@host.1.2345.0>``),
        not the connection's name.
        """
        pids = []
        for line in ctl("list_connections", "pid", "vhost").splitlines():
            pid, _, vhost = line.rpartition("\t")
            if vhost == self.name and pid:
                pids.append(pid)
        return pids

    def close_connections(self, reason: str = "closed by the test suite") -> int:
        """Close every client connection of this vhost (``close_all_connections`` would hit others'); how many."""
        closed = 0
        for pid in self.connections():
            try:
                ctl("close_connection", pid, reason)
                closed += 1
            except RuntimeError:  # it closed by itself meanwhile
                pass
        return closed

    def queue_depth(self, queue: str) -> int:
        """Messages ready plus unacknowledged in ``queue`` of this vhost (0 if it does not exist)."""
        for line in ctl("list_queues", "-p", self.name, "name", "messages").splitlines():
            name, _, count = line.rpartition("\t")
            if name == queue:
                return int(count)
        return 0


def _vhost() -> t.Iterator[VHost]:
    reason = available()
    if reason:
        pytest.skip(reason)
    vhost = VHost().create()
    try:
        yield vhost
    finally:
        vhost.delete()


@pytest.fixture(scope="session")
def rabbitmq() -> t.Iterator[VHost]:
    """The session's own RabbitMQ vhost, deleted at the end; skips when RabbitMQ is not there."""
    yield from _vhost()


@pytest.fixture
def rabbitmq_vhost() -> t.Iterator[VHost]:
    """A RabbitMQ vhost of the test's own (its own queues), deleted when the test ends."""
    yield from _vhost()
