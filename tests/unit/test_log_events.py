"""A queued event's line, formatted from its facts by the listener, is the line of its log record.

The listener writes events queued by :func:`httpqueue.logs.log_event` without
making a :class:`logging.LogRecord` (:meth:`~httpqueue.logs.EventFormatter.format_event`);
here each formatter gives both the same text, for every kind of event.
"""
from __future__ import annotations

import decimal
import io
import logging
import threading
import time
import typing as t

import pytest

from httpqueue import logs

EVENTS: list[tuple[str, int, dict[str, t.Any]]] = [
    ("create", logging.INFO, {"task_id": "s-njRPh6rXI_jO957g", "topic": "bench", "due_ms": 1795678324782,
                              "max_retry": 0, "callback": "http://127.0.0.1:9/cb"}),
    ("create", logging.DEBUG, {"task_id": "x", "topic": "é ü \u2603", "callback": "http://u:***@h/"}),
    ("create_batch", logging.INFO, {"count": 2, "topics": {"t": 2}, "first_ids": ["a", "b"], "refused": 1}),
    ("attempt", logging.WARNING, {"topic": "t", "task_id": "i", "answer": "code 500", "duration_ms": 12.3456,
                                  "attempt": 2, "outcome": "retry"}),
    ("promoted", logging.INFO, {"count": 3}),
    ("store_unavailable", logging.ERROR, {"error": "x" * 300, "odd": decimal.Decimal("1.5"), "s": {1}}),
]


@pytest.mark.parametrize("formatter", [logs.TextFormatter(), logs.JsonFormatter()], ids=["text", "json"])
@pytest.mark.parametrize("name, level, fields", EVENTS)
def test_an_event_s_line_is_its_record_s_line(formatter: logs.EventFormatter, name: str, level: int,
                                               fields: dict[str, t.Any]) -> None:
    for created in (time.time(), 1795678324.0005, 1795678324.9999):
        item = (created, level, name, fields, threading.get_ident(), "MainThread")
        assert formatter.format_event(created, level, name, fields) == formatter.format(logs._record_of(item))


def test_the_listener_writes_events_without_records_and_records_as_before() -> None:
    """Queued events and ordinary records, interleaved, come out in order and in their usual shape."""
    logger = logs.LOGGER
    saved = (logger.handlers[:], logger.level, logger.propagate, logs._active)
    out = io.StringIO()
    made: list[str] = []
    factory = logging.LogRecord

    class Counting(logging.LogRecord):
        def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
            made.append(args[3] if len(args) > 3 else "")
            super().__init__(*args, **kwargs)

    try:
        logs.configure("text", stream=out)
        logs.event("create", task_id="a", topic="t")
        logger.warning("plain %s", "record")
        logs.event("create_batch", count=1, topics={"t": 1}, first_ids=["b"])
        assert logs.flush()
        lines = out.getvalue().splitlines()
        assert [line.split(" ", 3)[3] for line in lines] == [
            'createTask :{"task_id":"a","topic":"t"}', "plain record",
            'createTasks :{"count":1,"topics":{"t":1},"first_ids":["b"]}']
        logging.setLogRecordFactory(Counting)  # a factory of the application's: events get records again
        logs.event("promoted", count=1)
        assert logs.flush()
        assert made and out.getvalue().splitlines()[-1].endswith("INFO promoted count=1")
    finally:
        logging.setLogRecordFactory(factory)
        logs.shutdown()
        logger.handlers[:], logger.level, logger.propagate = saved[:3]
        logs._active = saved[3]
