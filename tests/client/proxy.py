"""A real TCP relay on loopback that can lose answers: the request reaches the API, the reply never returns.

That is what a client sees when a load balancer resets, or a timeout fires,
after the API acted: the case an Idempotency-Key exists for.
"""
from __future__ import annotations

import socket
import threading
import typing as t


class LossyProxy:
    """Relays connections to ``upstream``; the first ``lose`` of them deliver the request and drop the reply."""

    def __init__(self, upstream: tuple[str, int], lose: int) -> None:
        self.upstream = upstream
        self.lose = lose
        self.lost = 0
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def __enter__(self) -> LossyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.listener.close()

    def _accept(self) -> None:
        while self.running:
            try:
                downstream, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            upstream = socket.create_connection(self.upstream, timeout=10)
            losing = self.lost < self.lose
            self.lost += losing
            threading.Thread(target=_pipe, args=(downstream, upstream, None), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, downstream, "lose" if losing else None),
                             daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket, mode: t.Literal["lose"] | None) -> None:
    """Copy ``source`` to ``sink`` until either closes; in ``lose`` mode, close both at the first bytes."""
    try:
        while True:
            data = source.recv(65536)
            if not data or mode == "lose":
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
