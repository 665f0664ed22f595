"""Log records: one per create and one per attempt, as text (the original Go httpqueue's style) or JSON lines.

Code logs events with :func:`event`, passing the facts as fields; the formatter
chosen by the ``log_format`` setting renders them. JSON lines carry timestamp,
level, event, task id, topic, attempt, duration and outcome, so shipping them to
Elasticsearch, ClickHouse or MongoDB (Vector, Fluent Bit) needs no code change.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import typing as t

LOGGER = logging.getLogger("httpqueue")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def event(name: str, level: int = logging.INFO, **fields: t.Any) -> None:
    """Log one structured event; ``fields`` become JSON keys or the text line's details."""
    LOGGER.log(level, name, extra={"event": name, "fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, t.Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "event": getattr(record, "event", None) or "message",
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The original Go httpqueue's human-readable lines: ``result : topic:id => answer ,cost time 59.88ms``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields is not None:
            record.message = _text_line(getattr(record, "event", ""), fields)
        return super().formatMessage(record)


def _text_line(name: str, f: t.Mapping[str, t.Any]) -> str:
    if name == "attempt":
        answer = f.get("answer") or f.get("error") or f.get("outcome")
        return (f"result : {f.get('topic')}:{f.get('task_id')} => {answer} ,cost time "
                f"{f.get('duration_ms', 0):.3f}ms (attempt {f.get('attempt')}, {f.get('outcome')})")
    if name == "create":
        return f"createTask :{json.dumps({k: v for k, v in f.items()}, default=str, ensure_ascii=False)}"
    rest = " ".join(f"{k}={v}" for k, v in f.items())
    return f"{name} {rest}".strip()


def configure(log_format: str = "text", level: int | str = logging.INFO) -> None:
    """Send httpqueue's records to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False
