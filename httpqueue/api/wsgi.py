"""The API behind a WSGI server: granian (the default) or gunicorn, serving the same Flask app.

``httpqueue api`` (and ``httpqueue run``'s API) call :func:`serve`, which
starts the server named by ``settings.api_server`` with httpqueue's choices:

=========================  =====================================  =====================================
                           granian (default)                      gunicorn
=========================  =====================================  =====================================
workers (``api_workers``   cores (measured: ``docs/benchmarks``)  2 x cores + 1, ``gthread``, 4 threads
0)                         + :data:`GRANIAN_BLOCKING_THREADS`     each
                           Python threads each
keep-alive                 30 s to read the next request's        ``keepalive`` 30 s
                           headers
SIGTERM                    workers finish their requests; killed  ``graceful_timeout`` 10 s
                           after 10 s
access log                 off                                    off
a dead worker              replaced; its live metrics dropped     replaced; ``child_exit`` drops its
                           (``_GranianServer``)                   live metrics
a dead master (SIGKILL)    workers stop within a second           workers stop (they watch their
                           (:func:`_exit_with_parent`)            parent)
the app's start-up heap    frozen once the app is built           the same
                           (:func:`freeze_heap`)
=========================  =====================================  =====================================

Both build the app in each worker process from the settings the command
installed (options and ``HTTPQUEUE_*`` variables reach the workers through the
environment), after the command pointed prometheus_client at its multiprocess
directory. :func:`application` is the same app as a factory for running the
API under a server of one's own choosing, e.g. ``granian --interface wsgi
--factory httpqueue.api.wsgi:application`` or ``gunicorn
'httpqueue.api.wsgi:application()'`` (set ``PROMETHEUS_MULTIPROC_DIR`` then,
or ``/metrics`` shows one worker's counters).
"""
from __future__ import annotations

import os
import time
import typing as t

from httpqueue.config import API_SERVERS, Settings

SERVERS = API_SERVERS
"""The servers ``httpqueue api --server`` knows (``HTTPQUEUE_API_SERVER``)."""

GRANIAN_BLOCKING_THREADS = 4
"""Python threads per granian worker (its default, backlog / workers / 2, would be 256 on 2 cores).

The requests are short and spend part of their time waiting for Redis, so a
few threads keep a worker's core busy; more only contend for the GIL (see
``docs/benchmarks.rst``, "API server").
"""

KEEPALIVE_S = 30
"""Seconds an idle keep-alive connection is kept open (gunicorn ``keepalive``, granian's header read timeout)."""

GRACEFUL_S = 10
"""Seconds the workers get to finish their requests after SIGTERM before they are killed."""

GUNICORN_THREADS = 4
"""Threads per gunicorn ``gthread`` worker."""


def default_workers(server: str, cores: int | None = None) -> int:
    """Worker processes when ``api_workers`` is 0: one per core for granian, 2 x cores + 1 for gunicorn."""
    cores = cores or os.cpu_count() or 1
    return cores if server == "granian" else 2 * cores + 1


def workers_for(settings: Settings) -> int:
    return settings.api_workers or default_workers(settings.api_server)


def bind_address(address: str) -> str:
    """The seed's ``:2356`` means every interface; the servers want ``0.0.0.0:2356``."""
    return f"0.0.0.0{address}" if address.startswith(":") else address


def application() -> t.Any:
    """The Flask app for this process's settings (environment, ``HTTPQUEUE_CONFIG``): a WSGI factory."""
    from httpqueue import context, logs, nodes
    from httpqueue.api import create_app

    ctx = context.current()
    logs.configure(ctx.settings.log_format)  # granian set up logging in the worker: ours again
    app = create_app()
    nodes.serve_api(app, ctx.store.redis, ctx.keys, name=ctx.settings.address, registry=ctx.registry)
    freeze_heap()  # also under a server of one's own choosing (load() does it for any app it serves)
    return app


APP = "httpqueue.api.wsgi:application"
"""The factory the servers call in each worker (``module:function``)."""


def load(target: str) -> t.Any:
    """Call the factory ``module:function`` (in a worker: the app is built after the fork), then :func:`freeze_heap`."""
    import importlib

    module, _, name = target.partition(":")
    app = getattr(importlib.import_module(module), name)()
    freeze_heap()
    return app


def freeze_heap() -> None:
    """Keep what the worker's start made (modules, schemas, the app: ~80,000 objects) out of the collector's scans.

    A request leaves a few objects that outlive the young generations (log
    records waiting for the log thread, say); they add up until Python runs a
    full collection, which walks every object of the process: 20-30 ms for
    the app's heap, about 9 us a request when spread over the requests in
    between (a tenth of a create's CPU beyond the floor's). ``gc.freeze()``
    moves the start-up's objects to a generation no collection visits, as
    the Python documentation advises for servers that fork workers; what a
    request makes is collected as before.
    """
    import gc

    gc.collect()
    gc.freeze()


def serve(settings: Settings, target: str = APP, *, workers: int = 0, blocking_threads: int = 0) -> None:
    """Serve ``target``'s app with ``settings.api_server`` until SIGTERM or SIGINT.

    ``workers`` (default: ``api_workers``, else the server's default) and
    ``blocking_threads`` (granian) are there for the benchmarks, which serve
    their own minimal app with the same settings (``bench/floor.py``).
    """
    workers = workers or workers_for(settings)
    if settings.api_server == "gunicorn":
        serve_gunicorn(settings, target, workers)
    else:
        serve_granian(settings, target, workers, blocking_threads or GRANIAN_BLOCKING_THREADS)


def serve_gunicorn(settings: Settings, target: str, workers: int) -> None:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", bind_address(settings.address))
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", GUNICORN_THREADS)
            self.cfg.set("keepalive", KEEPALIVE_S)
            self.cfg.set("graceful_timeout", GRACEFUL_S)
            self.cfg.set("accesslog", None)
            self.cfg.set("child_exit", _child_exit)

        def load(self) -> t.Any:
            return load(target)

    Server().run()


def _child_exit(server: t.Any, worker: t.Any) -> None:
    """gunicorn hook: a dead worker's live metrics leave the multiprocess files."""
    from httpqueue import metrics

    metrics.mark_process_dead(worker.pid)


def granian_bind(address: str) -> dict[str, t.Any]:
    """granian's ``address``/``port`` (or ``uds``) for a ``host:port``, ``:port``, ``[v6]:port`` or ``unix:path``."""
    from pathlib import Path

    if address.startswith("unix:"):
        return {"uds": Path(address.removeprefix("unix:"))}
    host, _, port = bind_address(address).rpartition(":")
    return {"address": host.strip("[]") or "0.0.0.0", "port": int(port)}


def serve_granian(settings: Settings, target: str, workers: int, blocking_threads: int) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    server = _granian_server_class()(
        target, interface=Interfaces.WSGI, **granian_bind(settings.address),
        workers=workers, blocking_threads=blocking_threads, websockets=False,
        http=HTTPModes.http1, http1_settings=HTTP1Settings(header_read_timeout=KEEPALIVE_S * 1000, keep_alive=True),
        log_access=False, log_level=LogLevels.info, respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_S,
    )
    server.serve(target_loader=_load_in_granian_worker)


def _load_in_granian_worker(target: str) -> t.Any:
    """Build the app in a granian worker that leaves when its master does (gunicorn's workers do by themselves)."""
    _exit_with_parent(os.getppid())
    return load(target)


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """SIGTERM this process (granian's graceful worker stop) once ``parent`` is no longer its parent.

    A master killed with SIGKILL cannot stop its workers: without this they
    would go on serving the port as orphans.
    """
    import signal
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="httpqueue-parent-watch", daemon=True).start()


def _granian_server_class() -> type[t.Any]:
    """granian's process-per-worker server, telling the metrics when a worker is gone.

    granian has no ``child_exit`` hook (only startup, reload and shutdown), so
    the two places where its parent sees a worker go are wrapped: a replaced
    worker (crash or reload) and the stop at shutdown. The files of a worker
    that died in between stay until it is replaced, as with gunicorn; httpqueue
    keeps no live gauges in them today (the gauges are read from Redis).
    """
    from granian.server import MPServer

    class _GranianServer(MPServer):  # type: ignore[misc]
        def _respawn_workers(self, workers: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
            pids = [self.wrks[idx]._id() for idx in workers]
            try:
                return super()._respawn_workers(workers, *args, **kwargs)
            finally:
                _mark_dead(pids)

        def _stop_workers(self) -> t.Any:
            pids = [wrk._id() for wrk in self.wrks]
            try:
                return super()._stop_workers()
            finally:
                _mark_dead(pids)

    return _GranianServer


def _mark_dead(pids: t.Iterable[int | None]) -> None:
    from httpqueue import metrics

    for pid in pids:
        if pid:
            metrics.mark_process_dead(pid)
