"""httpqueue: self-hosted delayed HTTP callbacks on Celery and Redis.

``celery -A httpqueue worker`` finds the Celery application as ``httpqueue.app``
(Celery looks there first); the Flask application is built by
:func:`httpqueue.api.create_app` and is never exposed under that name.
"""
from __future__ import annotations

__version__ = "0.1.0"

import typing as _t

__all__ = ["__version__", "app"]


def __getattr__(name: str) -> _t.Any:
    """Import the Celery app on first use, so the CLI can apply its options before Celery reads them."""
    if name == "app":
        from httpqueue.celery import app

        return app
    raise AttributeError(f"module 'httpqueue' has no attribute {name!r}")
