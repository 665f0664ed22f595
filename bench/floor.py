"""The floor: the least a Flask create can do, served like httpqueue's API, to compare it with.

``POST /create`` parses the JSON body, writes the task in one pipelined Redis
round trip (``HSET`` of its fields + ``ZADD`` to a timer key) and answers
``{"id": ...}``. No validation, no Lua, no logging, no metrics: what is left
of httpqueue's create cost above this is httpqueue's own.

``python -m bench.floor --server granian|gunicorn --address 127.0.0.1:PORT``
serves it through :func:`httpqueue.api.wsgi.serve`, so with exactly the
settings ``httpqueue api`` uses (worker count, threads, keep-alive); Redis is
``HTTPQUEUE_REDIS_URL``. ``--app httpqueue`` serves httpqueue's own API the
same way, with ``--workers``/``--threads`` to try other sizes (``bench/sweep.py``).
"""
from __future__ import annotations

import argparse
import base64
import os
import time
import typing as t

TIMER_KEY = "floor:timer"


def application() -> t.Any:
    """The floor app (a factory: each server worker builds its own, with its own Redis connections)."""
    import redis
    from flask import Flask, request

    from httpqueue.config import Settings

    client = redis.Redis.from_url(Settings.load().redis_url)
    app = Flask("floor")

    @app.post("/create")
    def create() -> t.Any:
        doc = request.get_json()
        task_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        due = int(time.time() * 1000 + float(doc.get("delay", 0)) * 1000)
        pipe = client.pipeline(transaction=False)
        pipe.hset(f"floor:t:{task_id}", mapping={"tp": str(doc.get("topic", "")), "cb": str(doc["callback"]),
                                                "c": app.json.dumps(doc.get("content")), "due": due,
                                                "mr": int(doc.get("retry", 0))})
        pipe.zadd(TIMER_KEY, {task_id: due})
        pipe.execute()
        return {"id": task_id}

    @app.get("/health")
    def health() -> t.Any:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    from httpqueue.config import API_SERVERS

    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=API_SERVERS, default=None)
    parser.add_argument("--address", required=True)
    parser.add_argument("--app", choices=["floor", "httpqueue"], default="floor")
    parser.add_argument("--workers", type=int, default=0, help="default: httpqueue's for the server")
    parser.add_argument("--threads", type=int, default=0, help="granian blocking threads (default httpqueue's)")
    args = parser.parse_args(argv)
    if args.app == "httpqueue":
        from httpqueue import cli  # the command's own set-up: settings, metrics directory, logging

        settings = cli._install(address=args.address, api_server=args.server)
        target = "httpqueue.api.wsgi:application"
    else:
        from httpqueue.config import Settings

        settings = Settings.load({"address": args.address, "api_server": args.server})
        target = "bench.floor:application"
    from httpqueue.api import wsgi

    wsgi.serve(settings, target, workers=args.workers, blocking_threads=args.threads)


if __name__ == "__main__":
    main()
