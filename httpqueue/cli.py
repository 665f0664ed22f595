"""The ``httpqueue`` command: ``run`` (everything), ``api`` (gunicorn), ``worker`` (Celery).

Options override ``HTTPQUEUE_*`` environment variables, which override the
defaults (see :mod:`httpqueue.config`). ``run`` starts its own Redis when no
URL is configured, then the API and a worker as child processes, and stops
them all on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import click

from httpqueue import context
from httpqueue.config import Settings
from httpqueue.context import EMBEDDED_URL_FILE


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


def _child_exit(server: t.Any, worker: t.Any) -> None:
    """gunicorn hook: a dead worker's live metrics leave the multiprocess files."""
    from httpqueue import metrics

    metrics.mark_process_dead(worker.pid)


def bind_address(address: str) -> str:
    """The seed's ``:2356`` means every interface; gunicorn wants ``0.0.0.0:2356``."""
    return f"0.0.0.0{address}" if address.startswith(":") else address


address_option = click.option("--address", envvar="HTTPQUEUE_ADDRESS", default=None,
                              help="Listen address host:port (default :2356).")
redis_option = click.option("--redis", "redis_url", envvar="HTTPQUEUE_REDIS_URL", default=None,
                            help="Redis URL (default: an embedded Redis for `run`).")


@click.group()
@click.version_option(package_name="httpqueue")
def main() -> None:
    """Delayed HTTP callbacks with retries, on Celery and Redis."""


@main.command()
@address_option
@redis_option
@click.option("--workers", type=int, default=None, help="gunicorn worker processes.")
def api(address: str | None, redis_url: str | None, workers: int | None) -> None:
    """Serve the HTTP API with gunicorn."""
    settings = _install(address=address, redis_url=redis_url, api_workers=workers)
    from gunicorn.app.base import BaseApplication

    from httpqueue.api import create_app

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", bind_address(settings.address))
            self.cfg.set("workers", settings.api_workers or 2 * (os.cpu_count() or 1) + 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 4)
            self.cfg.set("keepalive", 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", None)
            self.cfg.set("child_exit", _child_exit)

        def load(self) -> t.Any:
            return create_app(settings)

    Server().run()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@redis_option
@click.option("--pool", default=None, help="Celery pool: prefork (default), threads or solo.")
@click.option("--concurrency", "-c", type=int, default=None, help="Threads or processes.")
@click.pass_context
def worker(cli: click.Context, redis_url: str | None, pool: str | None, concurrency: int | None) -> None:
    """Run a Celery worker (with the promoter) using httpqueue's defaults; extra args go to Celery."""
    settings = _install(redis_url=redis_url, worker_pool=pool, worker_concurrency=concurrency)
    from httpqueue.celery import app
    from httpqueue.publish import QUEUE

    cores = os.cpu_count() or 1
    workers = settings.worker_concurrency or (8 * cores if settings.worker_pool == "threads" else cores)
    argv = ["worker", "--loglevel", "INFO", "--pool", settings.worker_pool, "--concurrency", str(workers),
            "--queues", QUEUE, *cli.args]
    app.worker_main(argv)


@main.command()
@address_option
@redis_option
@click.option("--data-dir", default=None, help="Where the embedded Redis keeps its data.")
def run(address: str | None, redis_url: str | None, data_dir: str | None) -> None:
    """API + worker (+ an embedded Redis if no URL is set), for development and small sites."""
    settings = _install(address=address, redis_url=redis_url, data_dir=data_dir)
    embedded = None
    if not settings.redis_url:
        from httpqueue.embedded import EmbeddedRedis

        embedded = EmbeddedRedis(settings.data_dir).start()
        (Path(settings.data_dir) / EMBEDDED_URL_FILE).write_text(embedded.url)
        os.environ["HTTPQUEUE_REDIS_URL"] = embedded.url
        click.echo(f"embedded Redis at {embedded.url} (data in {embedded.data_dir})", err=True)
    children = [subprocess.Popen([sys.executable, "-m", "httpqueue", role]) for role in ("worker", "api")]
    click.echo(f"httpqueue listening on {bind_address(settings.address)}", err=True)
    try:
        _supervise(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded is not None:
            embedded.stop()
            (Path(settings.data_dir) / EMBEDDED_URL_FILE).unlink(missing_ok=True)


def _supervise(children: list[subprocess.Popen[bytes]]) -> None:
    """Wait until a signal arrives or a child exits (then stop everything)."""
    stopping = False

    def stop(signum: int, frame: t.Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)


if __name__ == "__main__":
    main()
