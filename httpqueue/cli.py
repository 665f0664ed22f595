"""The ``httpqueue`` command: ``run`` (everything), ``api`` (granian or gunicorn), ``worker`` (Celery), ``export``.

Options override ``HTTPQUEUE_*`` environment variables, which override the
defaults (see :mod:`httpqueue.config`). ``run`` starts its own Redis when no
URL is configured, then the API and a worker as child processes, says
"listening" only once the API answers and the worker consumes, and stops them
all on Ctrl-C or SIGTERM. ``run`` is for development: it listens on loopback
unless told otherwise (``api`` keeps the original Go service's ``:2356``).

Each command says at start what would otherwise fail silently later: a Redis
that keeps nothing on disk, an API reachable beyond loopback without tokens.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import typing as t
import urllib.request
from pathlib import Path

import click

from httpqueue import config, context
from httpqueue.config import API_SERVERS, LOOPBACK_DEFAULT_ADDRESS, Settings
from httpqueue.context import EMBEDDED_URL_FILE
from httpqueue.operator_cli import COMMANDS as OPERATOR_COMMANDS

RUN_CHILD_ENV = "_HTTPQUEUE_RUN_CHILD"
"""Set in the children of ``run``, which already gave the start warnings: they do not repeat them."""

READY_TIMEOUT = 60.0
"""Seconds ``run`` waits for its API and its worker before it gives up (``--ready-timeout``)."""


def _install(**overrides: t.Any) -> Settings:
    """Apply command-line options on top of the environment, here and in child processes."""
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"HTTPQUEUE_{name.upper()}"] = str(value)
    settings = Settings.load()
    from httpqueue.metrics_dir import prepare_multiprocess_dir

    prepare_multiprocess_dir(settings.metrics_dir)  # before anything imports prometheus_client
    context.install(settings)
    from httpqueue import logs

    logs.configure(settings.log_format)
    return settings


def bind_address(address: str) -> str:
    """The seed's ``:2356`` means every interface; the servers want ``0.0.0.0:2356``."""
    from httpqueue.api import wsgi  # not at the top: the API imports prometheus_client (see _install)

    return wsgi.bind_address(address)


def run_address(address: str | None, environ: t.Mapping[str, str] = os.environ) -> str | None:
    """The address ``run`` listens on: as given (option, ``HTTPQUEUE_ADDRESS``, config file), else loopback.

    ``run`` is the README's first command, so its default must be safe on a
    laptop in a café: ``127.0.0.1:2356``, not every interface. ``None`` leaves
    the choice to the settings (the config file names an address).
    """
    if address is not None:
        return address
    if "address" in config._read_file(environ.get(config.ENV_PREFIX + "CONFIG", "")):
        return None
    return LOOPBACK_DEFAULT_ADDRESS


def warn_at_start(settings: Settings, *, listening: bool) -> None:
    """Log what would otherwise go wrong silently: no persistence in Redis, an open API beyond loopback.

    Never fails and never waits long: an unreachable Redis or a refused
    ``CONFIG`` (managed Redis) just means nothing is said about persistence.
    """
    if os.environ.get(RUN_CHILD_ENV):
        return
    from httpqueue import health, logs
    from httpqueue.connections import redis_client

    if listening:
        exposure = health.listen_warning(bind_address(settings.address), settings.api_tokens,
                                         settings.callback_allow)
        if exposure:
            logs.LOGGER.warning(exposure)
    try:
        client = redis_client(context.resolve_redis_url(settings), settings.sentinel_master)
    except Exception:  # a malformed URL is reported by the command itself
        return
    try:
        warning = health.persistence_warning(client)
    finally:
        client.close()
    if warning:
        logs.LOGGER.warning(warning)


def address_option(default: str) -> t.Callable[[t.Any], t.Any]:
    return click.option("--address", envvar="HTTPQUEUE_ADDRESS", default=None,
                        help=f"Listen address host:port (default {default}; :port means every interface).")

redis_option = click.option("--redis", "redis_url", envvar="HTTPQUEUE_REDIS_URL", default=None,
                            help="Redis URL (default: an embedded Redis for `run`).")


@click.group()
@click.version_option(package_name="httpqueue")
def main() -> None:
    """Delayed HTTP callbacks with retries, on Celery and Redis."""


for _command in OPERATOR_COMMANDS:  # tasks, topics, schedules, nodes: a running API's client (operator_cli.py)
    main.add_command(_command)


server_option = click.option("--server", "api_server", type=click.Choice(API_SERVERS), default=None,
                             help="WSGI server of the API (default granian; HTTPQUEUE_API_SERVER).")


@main.command()
@address_option(":2356")
@redis_option
@server_option
@click.option("--workers", type=int, default=None,
              help="API worker processes (default: cores for granian, 2 x cores + 1 for gunicorn).")
def api(address: str | None, redis_url: str | None, api_server: str | None, workers: int | None) -> None:
    """Serve the HTTP API with granian (default) or gunicorn."""
    settings = _install(address=address, redis_url=redis_url, api_server=api_server, api_workers=workers)
    warn_at_start(settings, listening=True)
    from httpqueue.api import wsgi

    wsgi.serve(settings)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@redis_option
@click.option("--pool", default=None, help="Celery pool: prefork (default), threads or solo.")
@click.option("--concurrency", "-c", type=int, default=None, help="Threads or processes.")
@click.pass_context
def worker(cli: click.Context, redis_url: str | None, pool: str | None, concurrency: int | None) -> None:
    """Run a Celery worker (with the promoter) using httpqueue's defaults; extra args go to Celery."""
    settings = _install(redis_url=redis_url, worker_pool=pool, worker_concurrency=concurrency)
    warn_at_start(settings, listening=False)
    from httpqueue.celery import app
    from httpqueue.publish import QUEUE

    cores = os.cpu_count() or 1
    workers = settings.worker_concurrency or (8 * cores if settings.worker_pool == "threads" else cores)
    argv = ["worker", "--loglevel", "INFO", "--pool", settings.worker_pool, "--concurrency", str(workers),
            "--queues", QUEUE, *cli.args]
    app.worker_main(argv)


@main.command()
@redis_option
@click.option("--sink", "sinks", multiple=True,
              help="Where to write events: clickhouse://, elasticsearch:// or mongodb:// URL (repeatable; "
                   "default HTTPQUEUE_EXPORT_SINKS).")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on 127.0.0.1:PORT.")
@click.option("--off", is_flag=True, help="Turn event writing off for the whole store, then exit.")
def export(redis_url: str | None, sinks: tuple[str, ...], metrics_port: int | None, off: bool) -> None:
    """Copy task lifecycle events from Redis to ClickHouse, Elasticsearch or MongoDB (several may run)."""
    settings = _install(redis_url=redis_url, export_metrics_port=metrics_port,
                        export_sinks=",".join(sinks) if sinks else None)
    from httpqueue.export import command

    sys.exit(command.run(settings, off=off))


@main.command()
@address_option(LOOPBACK_DEFAULT_ADDRESS)
@redis_option
@server_option
@click.option("--data-dir", default=None, help="Where the embedded Redis keeps its data.")
@click.option("--ready-timeout", type=float, default=READY_TIMEOUT, show_default=True,
              help="Seconds to wait for the API and the worker before giving up.")
def run(address: str | None, redis_url: str | None, api_server: str | None, data_dir: str | None,
        ready_timeout: float) -> None:
    """API + worker (+ an embedded Redis if no URL is set), for development and small sites."""
    stop = _StopFlag()
    settings = _install(address=run_address(address), redis_url=redis_url, api_server=api_server,
                        data_dir=data_dir)
    embedded = None
    if not settings.redis_url:
        from httpqueue.embedded import EmbeddedRedis

        embedded = EmbeddedRedis(settings.data_dir).start()
        (Path(settings.data_dir) / EMBEDDED_URL_FILE).write_text(embedded.url)
        os.environ["HTTPQUEUE_REDIS_URL"] = embedded.url
        settings = settings.replace(redis_url=embedded.url)
        click.echo(f"embedded Redis at {embedded.url} (data in {embedded.data_dir})", err=True)
    ctx = context.install(settings)
    warn_at_start(settings, listening=True)
    worker_name = f"httpqueue-run-{os.getpid()}@{socket.gethostname()}"
    heartbeat = ctx.keys.worker_heartbeat(worker_name)  # its own worker's: another host's does not count
    env = {**os.environ, RUN_CHILD_ENV: "1"}
    children = {
        "worker": subprocess.Popen([sys.executable, "-m", "httpqueue", "worker", "-n", worker_name], env=env),
        "api": subprocess.Popen([sys.executable, "-m", "httpqueue", "api"], env=env),
    }
    code = 0
    try:
        problem = _wait_ready(children, {
            "the API did not answer /health": lambda: _api_answers(settings.address),
            "the worker did not report in": lambda: bool(ctx.store.redis.exists(heartbeat)),
        }, timeout=ready_timeout, stop=stop)
        if problem:
            click.echo(f"httpqueue run: {problem}", err=True)
            code = 1
        elif not stop.stopping:
            click.echo(f"httpqueue listening on {bind_address(settings.address)}", err=True)
            code = _supervise(children, stop)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded is not None:
            embedded.stop()
            (Path(settings.data_dir) / EMBEDDED_URL_FILE).unlink(missing_ok=True)
    sys.exit(code)


class _StopFlag:
    """Set by SIGTERM or SIGINT (Ctrl-C): ``run`` then stops its children and exits."""

    def __init__(self) -> None:
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, frame: t.Any) -> None:
        self.stopping = True


def _api_answers(address: str) -> bool:
    """Whether the API bound to ``address`` answers ``GET /health`` (a unix socket: whether it exists)."""
    from httpqueue import health

    if address.startswith("unix:"):
        return Path(address.removeprefix("unix:")).exists()
    try:
        url = health.local_url(bind_address(address)) + "/health"
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_ready(children: t.Mapping[str, subprocess.Popen[bytes]], checks: t.Mapping[str, t.Callable[[], bool]],
                *, timeout: float, stop: _StopFlag) -> str:
    """Poll every check until all pass ('' then) or ``timeout`` passes or a child exits (then why, in words).

    ``checks`` maps what a failure means to its test; each is polled until it
    passes once. ``run`` checks the API's /health and its own worker's
    heartbeat, which the worker writes only once its consumer is ready (see
    :mod:`httpqueue.worker.promoter`): "listening" then means a task created
    now fires on time, not a second late.
    """
    deadline = time.monotonic() + timeout
    pending = dict(checks)
    while not stop.stopping:
        for role, child in children.items():
            if child.poll() is not None:
                return f"the {role} exited with code {child.returncode} before the service was ready (see above)"
        for what, test in list(pending.items()):
            try:
                passed = test()
            except Exception:  # Redis or the API not answering yet: poll again until the deadline
                passed = False
            if passed:
                del pending[what]
        if not pending:
            return ""
        if time.monotonic() > deadline:
            return f"{' and '.join(pending)} within {timeout:g} s; stopping (see the log above)"
        time.sleep(0.1)
    return ""


def _supervise(children: t.Mapping[str, subprocess.Popen[bytes]], stop: _StopFlag) -> int:
    """Wait until a signal arrives (exit 0) or a child exits (exit 1, after saying which)."""
    while not stop.stopping:
        for role, child in children.items():
            if child.poll() is not None:
                click.echo(f"httpqueue run: the {role} exited with code {child.returncode}; stopping", err=True)
                return 1
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    main()
