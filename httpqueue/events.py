"""Lifecycle events, emitted once where they happen and fanned out to listeners.

Every create, attempt, delete, promotion pass and store outage is emitted here:
the log line (see :mod:`httpqueue.logs`) and the Prometheus metrics
(:mod:`httpqueue.metrics`) both listen, so neither polls Redis or duplicates
the facts. Listeners must be cheap and must not raise (a failing listener is
logged and skipped, never allowed to break a delivery).

Emitting is on the request path (one event per single create, one per batch
create: ``create_batch`` with the count per topic), so it does as little as it
can: the log record is made only if its level is enabled, and it is queued,
not written (the log listener thread writes it).
"""
from __future__ import annotations

import logging
import typing as t

from httpqueue import logs

Listener = t.Callable[[str, t.Mapping[str, t.Any]], None]

_listeners: list[Listener] = []


def subscribe(listener: Listener) -> Listener:
    """Call ``listener(name, fields)`` for every event emitted in this process."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


def unsubscribe(listener: Listener) -> None:
    """Stop calling ``listener`` (tests)."""
    if listener in _listeners:
        _listeners.remove(listener)


def emit(name: str, level: int = logging.INFO, **fields: t.Any) -> None:
    """Log one event (if its level is enabled) and hand it to the listeners."""
    if logs.LOGGER.isEnabledFor(level):
        logs.log_event(name, level, fields)
    for listener in _listeners:
        try:
            listener(name, fields)
        except Exception:  # noqa: BLE001 - observability must never break delivery
            logs.LOGGER.exception("event listener %r failed on %s", listener, name)
