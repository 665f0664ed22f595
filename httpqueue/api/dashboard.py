"""The dashboard: one static page (HTML, CSS, JS shipped in the package, no build step).

The page holds no data; it calls the API (``/v1/stats``, ``/v1/topics``,
``/v1/series``, ``/v1/tasks``...) with the bearer token the user typed in, so
it is behind the same authentication as every other endpoint.
"""
from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, abort

STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


blp = Blueprint("dashboard", __name__)
FOLDER = resources.files("httpqueue.api") / "static"


@blp.route("/dashboard")
def page() -> Response:
    return Response((FOLDER / "dashboard.html").read_bytes(), mimetype="text/html")


@blp.route("/dashboard/<name>")
def asset(name: str) -> Response:
    if name not in STATIC:
        abort(404)
    response = Response((FOLDER / name).read_bytes(), mimetype=STATIC[name])
    response.headers["Cache-Control"] = "no-cache"
    return response
