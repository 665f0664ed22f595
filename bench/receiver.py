"""A fast callback receiver for benchmarks: raw HTTP/1.1 on asyncio, in its own process.

It answers every ``POST`` with ``{"code":100}`` and records, per request, the
arrival time and the ``X-Httpqueue-Due`` / ``X-Httpqueue-Id`` headers (the
Celery baseline sends the same headers), so lateness is measured where it
matters: at the receiver. It runs in a process of its own so that recording
never competes with the benchmark driver for a GIL.

Control endpoints (``GET``) for the driver:

* ``/_stats``: ``{"count", "unique", "first", "last"}`` (arrival times in Unix seconds);
* ``/_lateness``: ``{"late_ms": [...]}``, arrival minus due per request, in arrival order;
* ``/_arrivals``: ``{"at": [...]}``, every arrival time;
* ``/_reset``: forget everything recorded.

Run: ``python -m bench.receiver --port 8000``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
import typing as t

import requests

OK_BODY = b'{"code":100}'
OK_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(OK_BODY)).encode() + b"\r\n\r\n" + OK_BODY)


class Record:
    """Everything received since the last reset, as parallel lists (cheap to append)."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.due: list[int] = []
        self.ids: list[str] = []

    def add(self, at: float, due: int, task_id: str) -> None:
        self.at.append(at)
        self.due.append(due)
        self.ids.append(task_id)

    def stats(self) -> dict[str, t.Any]:
        return {"count": len(self.at), "unique": len(set(self.ids)),
                "first": self.at[0] if self.at else None, "last": self.at[-1] if self.at else None}

    def lateness(self) -> dict[str, t.Any]:
        return {"late_ms": [round(at * 1000 - due, 3) for at, due in zip(self.at, self.due) if due]}


class CallbackProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests as they arrive, answer each at once."""

    def __init__(self, record: Record, control: t.Callable[[bytes], bytes]) -> None:
        self.record = record
        self.control = control
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t.cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in PROTOCOLS:
            PROTOCOLS.remove(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length, due, task_id = parse_head(head)
            if len(self.buffer) < end + 4 + length:
                return  # body incomplete
            self.buffer = self.buffer[end + 4 + length:]
            self.handle(head)
            if head.startswith(b"POST"):
                self.record.add(time.time(), due or 0, task_id)

    def handle(self, head: bytes) -> None:
        assert self.transport is not None
        if head.startswith(b"GET /_"):
            body = self.control(head.split(b" ", 2)[1])
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
        else:
            self.transport.write(OK_RESPONSE)


def parse_head(head: bytes) -> tuple[int, int | None, str]:
    """Content-Length, X-Httpqueue-Due (ms) and X-Httpqueue-Id of a request head."""
    length, due, task_id = 0, None, ""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"x-httpqueue-due":
            due = int(value)
        elif name == b"x-httpqueue-id":
            task_id = value.strip().decode()
    return length, due, task_id


def make_control(state: dict[str, Record]) -> t.Callable[[bytes], bytes]:
    def control(path: bytes) -> bytes:
        record = state["record"]
        if path == b"/_reset":
            state["record"] = Record()
            # every live connection must see the new record
            for proto in PROTOCOLS:
                proto.record = state["record"]
            return b"{}"
        if path == b"/_lateness":
            return json.dumps(record.lateness()).encode()
        if path == b"/_arrivals":
            return json.dumps({"at": record.at}).encode()
        return json.dumps(record.stats()).encode()
    return control


PROTOCOLS: list[CallbackProtocol] = []


async def serve(port: int) -> None:
    state = {"record": Record()}
    control = make_control(state)

    def factory() -> CallbackProtocol:
        proto = CallbackProtocol(state["record"], control)
        PROTOCOLS.append(proto)
        return proto

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


class ReceiverClient:
    """The driver's side: read the receiver's statistics over its control endpoints."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = requests.Session()

    def url(self, path: str = "/cb") -> str:
        return self.base + path

    def _get(self, path: str) -> t.Any:
        response = self.session.get(self.base + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, t.Any]:
        return self._get("/_stats")

    def lateness(self) -> list[float]:
        return self._get("/_lateness")["late_ms"]

    def arrivals(self) -> list[float]:
        return self._get("/_arrivals")["at"]

    def reset(self) -> None:
        self._get("/_reset")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
