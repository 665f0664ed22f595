"""Log records: one per create and one per attempt, as text (the original Go httpqueue's style) or JSON lines.

Code logs events with :func:`event`, passing the facts as fields; the formatter
chosen by the ``log_format`` setting renders them. JSON lines carry timestamp,
level, event, task id, topic, attempt, duration and outcome, so shipping them to
Elasticsearch, ClickHouse or MongoDB (Vector, Fluent Bit) needs no code change.

Records are written off the request path: :func:`configure` puts a
:class:`~logging.handlers.QueueHandler` on the ``httpqueue`` logger, and a
:class:`~logging.handlers.QueueListener` thread formats and writes what it
queues. A request (or a delivery) only builds the record and queues it, and
only when its level is enabled. The listener is started lazily in each process
by its first record, so a forked child (a gunicorn or granian worker, a Celery
prefork child) gets a queue and a thread of its own; at fork time the writing
handler's lock is held by the forking thread, so a child never inherits it held
in the middle of a write. A process that stops cleanly writes every queued
record first: the listener is stopped and drained at exit (``atexit``, the exit
of a multiprocessing child, Celery's ``worker_process_shutdown`` in a prefork
child, which leaves through ``os._exit``). Records logged after that are
written directly. :func:`flush` waits until what was logged so far is written.
"""
from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
import typing as t
from multiprocessing import util as multiprocessing_util

from httpqueue import jsoncodec

LOGGER = logging.getLogger("httpqueue")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

FLUSH_TIMEOUT = 5.0
"""Seconds :func:`flush` waits for the listener at most."""

DRAIN_INTERVAL = 0.02
"""Seconds the log listener pauses between two rounds of writing what was queued."""


def enabled(level: int) -> bool:
    """Whether a record at ``level`` would be logged (check first, build the fields only then)."""
    return LOGGER.isEnabledFor(level)


def event(name: str, level: int = logging.INFO, **fields: t.Any) -> None:
    """Log one structured event; ``fields`` become JSON keys or the text line's details."""
    if LOGGER.isEnabledFor(level):
        log_event(name, level, fields)


def log_event(name: str, level: int, fields: t.Mapping[str, t.Any]) -> None:
    """Log one structured event whose level the caller checked (:func:`enabled`): no kwargs repacking.

    When the logger is as :func:`configure` left it (its queue only, no
    filters), the caller queues just the facts (time, level, name, fields,
    thread) and the listener thread makes the record: the request pays for
    no ``LogRecord``. Otherwise (tests' handlers, caplog) the record is made
    here (no caller lookup: it would always find this module) and handed to
    the logger's handlers, as ``LOGGER.log`` would.
    """
    active = _active
    if active is not None and active.takes_events():
        active.enqueue_event((time.time(), level, name, fields, threading.get_ident(),
                              threading.current_thread().name))
        return
    LOGGER.handle(make_record(name, level, fields))


def make_record(name: str, level: int, fields: t.Mapping[str, t.Any]) -> logging.LogRecord:
    """The log record of an event."""
    record = LOGGER.makeRecord(LOGGER.name, level, __file__, 0, name, (), None, "event")
    record.event = name  # type: ignore[attr-defined]
    record.fields = fields  # type: ignore[attr-defined]
    return record


def _record_of(item: tuple[t.Any, ...]) -> logging.LogRecord:
    """The record of an event queued by :func:`log_event`, as if made when it was logged."""
    created, level, name, fields, thread, thread_name = item
    record = make_record(name, level, fields)
    record.relativeCreated -= (record.created - created) * 1000
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    record.thread, record.threadName = thread, thread_name
    return record


def _json(value: t.Mapping[str, t.Any]) -> str:
    return jsoncodec.dumps_text(value if type(value) is dict else dict(value))


class EventFormatter(logging.Formatter):
    """A formatter that can also format a queued event's facts directly, without a :class:`~logging.LogRecord`.

    :meth:`format_event` is what :meth:`format` gives for the record of that
    event (a test checks both on the same events); the listener uses it for
    events queued by :func:`log_event`, so a create's line costs no record:
    making one was a third of the line's cost, and every create has a line.
    """

    def format_event(self, created: float, levelno: int, name: str, fields: t.Mapping[str, t.Any]) -> str:
        raise NotImplementedError


class JsonFormatter(EventFormatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields and not record.exc_info:
            return self.format_event(record.created, record.levelno, getattr(record, "event", None) or "message",
                                     fields, record.name, record.msecs)
        doc: dict[str, t.Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "event": getattr(record, "event", None) or "message",
        }
        if fields:
            doc.update(fields)
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return _json(doc)

    def format_event(self, created: float, levelno: int, name: str, fields: t.Mapping[str, t.Any],
                     logger: str = LOGGER.name, msecs: float | None = None) -> str:
        if msecs is None:  # as LogRecord computes it (_record_of for a queued event)
            msecs = int((created - int(created)) * 1000) + 0.0
        doc: dict[str, t.Any] = {
            "ts": round(created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z",
            "level": logging.getLevelName(levelno).lower(), "logger": logger, "event": name or "message",
        }
        doc.update(fields)
        return _json(doc)


class TextFormatter(EventFormatter):
    """The original Go httpqueue's human-readable lines: ``result : topic:id => answer ,cost time 59.88ms``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        self._second: tuple[int, str] = (-1, "")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields is not None:
            record.message = _text_line(getattr(record, "event", ""), fields)
        return super().formatMessage(record)

    def format_event(self, created: float, levelno: int, name: str, fields: t.Mapping[str, t.Any]) -> str:
        second, stamp = self._second  # the time to the second, formatted once per second
        if second != int(created):
            stamp = time.strftime(t.cast(str, self.datefmt), self.converter(created))
            self._second = (int(created), stamp)
        return f"{stamp} {logging.getLevelName(levelno)} {_text_line(name, fields)}"


def _text_line(name: str, f: t.Mapping[str, t.Any]) -> str:
    if name == "attempt":
        answer = f.get("answer") or f.get("error") or f.get("outcome")
        return (f"result : {f.get('topic')}:{f.get('task_id')} => {answer} ,cost time "
                f"{f.get('duration_ms', 0):.3f}ms (attempt {f.get('attempt')}, {f.get('outcome')})")
    if name == "create":
        return f"createTask :{_json(f)}"
    if name == "create_batch":
        return f"createTasks :{_json(f)}"
    rest = " ".join(f"{k}={v}" for k, v in f.items())
    return f"{name} {rest}".strip()


class _Flush:
    """Queued by :func:`flush`: the listener sets ``done`` once everything queued before it is written."""

    def __init__(self) -> None:
        self.done = threading.Event()


class StreamWriter(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler behind the queue: a :class:`~logging.StreamHandler` that can write many records at once.

    The listener hands it what it drained from the queue in one go; the
    formatted lines are written with one ``write`` (one system call on a
    line-buffered stream, instead of one per record).
    """

    def handle_batch(self, records: list[logging.LogRecord | tuple[t.Any, ...]]) -> None:
        """Write ``records``: log records, or events queued by :func:`log_event` (made into records if needed)."""
        lines: list[str] = []
        formatter = self.formatter
        direct = (isinstance(formatter, EventFormatter) and not self.filters
                  and logging.getLogRecordFactory() is logging.LogRecord)
        for record in records:
            if type(record) is tuple:
                if direct:
                    created, level, name, fields = record[:4]
                    if level < self.level:
                        continue
                    try:
                        lines.append(t.cast(EventFormatter, formatter).format_event(created, level, name, fields)
                                     + self.terminator)
                    except Exception:  # noqa: BLE001 - as Handler.emit: report the record, go on
                        self.handleError(_record_of(record))
                    continue
                record = _record_of(record)
            assert isinstance(record, logging.LogRecord)
            if record.levelno < self.level or not self.filter(record):
                continue
            try:
                lines.append(self.format(record) + self.terminator)
            except Exception:  # noqa: BLE001 - as Handler.emit: report the record, go on
                self.handleError(record)
        if not lines:
            return
        self.acquire()
        try:
            self.stream.write("".join(lines))
            self.flush()
        except Exception:  # noqa: BLE001
            last = records[-1]
            self.handleError(_record_of(last) if type(last) is tuple else t.cast(logging.LogRecord, last))
        finally:
            self.release()


_STOP = object()
"""Queued by :meth:`_Listener.stop` after every record: the thread ends there."""


class _Listener(logging.handlers.QueueListener):
    """The writing thread of one process: drains the queue and writes what it took, then pauses.

    It takes everything queued at once (one write for all of it) and then
    waits :data:`DRAIN_INTERVAL` before the next round, so under load a
    record costs the thread a share of one wake-up, not one of its own; a
    line is written at most that late (:func:`flush` and the stop at exit
    do not wait for it).
    """

    def __init__(self, queue: t.Any, handler: logging.Handler) -> None:
        super().__init__(queue, handler, respect_handler_level=True)
        self.wake = threading.Event()

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="httpqueue-log", daemon=True)
        self._thread = thread
        thread.start()

    def enqueue_sentinel(self) -> None:
        self.queue.put_nowait(_STOP)
        self.wake.set()

    def _run(self) -> None:
        q: queue.SimpleQueue[t.Any] = self.queue  # type: ignore[assignment]
        while True:
            batch = [q.get()]
            while True:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            if self._write(batch):
                return
            self.wake.wait(DRAIN_INTERVAL)
            self.wake.clear()

    def _write(self, batch: list[t.Any]) -> bool:
        """Write ``batch`` in order; True if it ends with the stop sentinel."""
        records: list[logging.LogRecord | tuple[t.Any, ...]] = []
        for item in batch:
            if isinstance(item, (tuple, logging.LogRecord)):  # an event's facts: a record only if a handler needs one
                records.append(item)
                continue
            self._handle_all(records)
            records = []
            if item is _STOP:
                return True
            if isinstance(item, _Flush):
                for handler in self.handlers:
                    _quietly(handler.flush)
                item.done.set()
        self._handle_all(records)
        return False

    def _handle_all(self, records: list[logging.LogRecord | tuple[t.Any, ...]]) -> None:
        if not records:
            return
        made: list[logging.LogRecord] | None = None
        for handler in self.handlers:
            try:
                if isinstance(handler, StreamWriter):
                    handler.handle_batch(records)
                else:
                    if made is None:
                        made = [_record_of(r) if type(r) is tuple else t.cast(logging.LogRecord, r) for r in records]
                    for record in made:
                        if record.levelno >= handler.level:
                            handler.handle(record)
            except Exception:  # noqa: BLE001 - a failing handler must not end the thread
                pass


class QueueingHandler(logging.handlers.QueueHandler):
    """Queues records for this process's listener thread, which it starts with the process's first record.

    ``target`` is the handler that formats and writes. The listener is started
    lazily and checked against the process id, so a process forked after
    :func:`configure` (whose threads did not survive the fork) starts its own,
    with a fresh queue: records queued in the parent but not yet written there
    are not written twice.
    """

    def __init__(self, target: logging.Handler) -> None:
        super().__init__(queue.SimpleQueue())
        self.target = target
        self.listener: _Listener | None = None
        self.pid: int | None = None  # the process whose listener runs (None: not started here)
        self.stopped = False  # stopped at this process's exit: records are written directly
        self._starting = threading.Lock()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record as queued: its message fixed now (arguments may change later), nothing formatted.

        The standard ``prepare`` formats the whole record here, on the
        caller's thread, for a queue to another process; the listener is a
        thread of this process, so formatting is left to it.
        """
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.pid != os.getpid():
            if self.stopped:
                self.target.handle(record)
                return
            self._start()
        self.queue.put_nowait(record)

    def takes_events(self) -> bool:
        """Whether an event may be queued as bare facts: the logger's only handler, nothing filtering."""
        handlers = LOGGER.handlers
        return (len(handlers) == 1 and handlers[0] is self and not LOGGER.filters and not self.filters
                and not LOGGER.disabled and not self.level)

    def enqueue_event(self, item: tuple[t.Any, ...]) -> None:
        if self.pid != os.getpid():
            if self.stopped:
                self.target.handle(_record_of(item))
                return
            self._start()
        self.queue.put_nowait(item)

    def _start(self) -> None:
        with self._starting:
            pid = os.getpid()
            if self.pid == pid:
                return
            fresh: queue.SimpleQueue[t.Any] = queue.SimpleQueue()
            listener = _Listener(fresh, self.target)
            listener.start()
            self.queue, self.listener = fresh, listener
            self.pid = pid  # last: a thread that sees this pid sees the queue of this process
            _at_process_exit(self)

    def flush(self) -> None:
        self.drain()

    def drain(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until everything queued so far is written (False if the listener did not answer in time)."""
        if self.pid != os.getpid() or self.listener is None:
            self.target.flush()
            return True
        marker = _Flush()
        self.queue.put_nowait(marker)
        self.listener.wake.set()
        return marker.done.wait(timeout)

    def stop(self) -> None:
        """Write what is queued and stop this process's listener; later records are written directly."""
        with self._starting:
            listener, running_here = self.listener, self.pid == os.getpid()
            self.stopped = True
            self.pid = None
            if running_here and listener is not None:
                self.listener = None
                listener.stop()  # the sentinel goes after every queued record; joins the thread
                while True:  # what a thread queued after the sentinel, as it saw the listener still running
                    try:
                        leftover = t.cast("queue.SimpleQueue[t.Any]", self.queue).get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(leftover, tuple):
                        leftover = _record_of(leftover)
                    if isinstance(leftover, logging.LogRecord):
                        self.target.handle(leftover)
        _quietly(self.target.flush)

    def forked(self) -> None:
        """In a forked child: no listener runs here; the next record starts one, with a queue of its own."""
        self.listener, self.pid, self.stopped = None, None, False
        self._starting = threading.Lock()  # it may have been held by another thread of the parent
        self.queue = queue.SimpleQueue()

    def close(self) -> None:
        self.stop()
        super().close()


_active: QueueingHandler | None = None
_held_across_fork: logging.Handler | None = None


def configure(log_format: str = "text", level: int | str = logging.INFO,
              stream: t.TextIO | None = None) -> None:
    """Send httpqueue's records to ``stream`` (stderr) in the chosen format, through a listener thread.

    Idempotent: a second call drains and replaces the first one's pipeline.
    """
    global _active
    handler = StreamWriter(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    queueing = QueueingHandler(handler)
    previous, _active = _active, queueing
    LOGGER.handlers[:] = [queueing]
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    if previous is not None:
        previous.stop()
    _stop_with_celery_children()


def flush(timeout: float = FLUSH_TIMEOUT) -> bool:
    """Wait until every record logged so far in this process is written."""
    return _active.drain(timeout) if _active is not None else True


def shutdown() -> None:
    """Write what is queued and stop this process's listener (also done at exit)."""
    if _active is not None:
        _active.stop()


def _quietly(call: t.Callable[[], t.Any]) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - a closed stream at exit is no reason to fail the exit
        pass


_exit_hooks_for: set[int] = set()


def _at_process_exit(handler: QueueingHandler) -> None:
    """Stop ``handler``'s listener when this process ends cleanly, however it ends.

    ``atexit`` covers an interpreter that exits (gunicorn workers and
    masters, the Celery main process, the CLI); a multiprocessing child (a
    granian worker) leaves through ``os._exit`` after running its
    finalizers, so one is registered there as well. Both run :meth:`stop` at
    most once per process.
    """
    pid = os.getpid()
    if pid in _exit_hooks_for:
        return
    _exit_hooks_for.add(pid)
    atexit.register(_stop_at_exit, pid)
    multiprocessing_util.Finalize(None, _stop_at_exit, args=(pid,), exitpriority=0)


def _stop_at_exit(pid: int) -> None:
    if pid == os.getpid():  # an inherited registration of the parent's does nothing in a child
        shutdown()


def _stop_with_celery_children() -> None:
    """A Celery prefork child leaves through ``os._exit``, after sending ``worker_process_shutdown``."""
    try:
        from celery import signals
    except ImportError:  # pragma: no cover - Celery is a dependency; the API would do without
        return
    signals.worker_process_shutdown.connect(_on_worker_process_shutdown, weak=False,
                                            dispatch_uid="httpqueue.logs.shutdown")


def _on_worker_process_shutdown(*args: t.Any, **kwargs: t.Any) -> None:
    shutdown()


def _before_fork() -> None:
    """Hold the writing handler's lock across ``fork()``: nobody (the listener) is then mid-write in the child.

    A write in progress holds the stream's own lock too (a buffered file's),
    which the child would inherit held: its first log line would hang.
    """
    global _held_across_fork
    active = _active
    if active is not None:
        active.target.acquire()
        _held_across_fork = active.target


def _after_fork_in_parent() -> None:
    global _held_across_fork
    held, _held_across_fork = _held_across_fork, None
    if held is not None:
        held.release()


def _after_fork_in_child() -> None:
    global _held_across_fork
    held, _held_across_fork = _held_across_fork, None
    if held is not None:  # unheld in the child (logging's own at-fork hook does it too; this never waits)
        reinit = getattr(held, "_at_fork_reinit", None)
        if reinit is not None:
            reinit()
    if _active is not None:
        _active.forked()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
