"""Log records are queued by the caller and written by a listener thread, in every process, and none is lost.

The in-process tests configure the ``httpqueue`` logger on a stream of their
own and put the logger back as it was afterwards (the rest of the suite relies
on propagation to pytest's caplog). The process tests run a script in a fresh
interpreter: forking, exiting, Celery's prefork pool.
"""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import typing as t

import pytest

from httpqueue import events, logs


@pytest.fixture
def stream() -> t.Iterator[io.StringIO]:
    """``logs.configure`` on a StringIO for the test; the logger restored afterwards."""
    logger = logs.LOGGER
    saved = (logger.handlers[:], logger.level, logger.propagate, logs._active)
    out = io.StringIO()
    yield out
    logs.shutdown()
    logger.handlers[:], logger.level, logger.propagate = saved[:3]
    logs._active = saved[3]


def test_records_are_written_by_the_listener_thread_in_the_original_format(stream: io.StringIO) -> None:
    logs.configure("text", stream=stream)
    writers: list[str] = []
    original = logs.StreamWriter.handle_batch

    def spy(self: logs.StreamWriter, records: list[logging.LogRecord]) -> None:
        writers.append(threading.current_thread().name)
        original(self, records)

    fields = {"task_id": "abc", "topic": "t", "due_ms": 5, "max_retry": 1, "callback": "http://h/é"}
    logs.StreamWriter.handle_batch = spy  # type: ignore[method-assign]
    try:
        events.emit("create", **fields)
        logs.LOGGER.warning("plain %s message", "old-style")
        assert logs.flush()
    finally:
        logs.StreamWriter.handle_batch = original  # type: ignore[method-assign]
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(" INFO createTask :" + json.dumps(fields, ensure_ascii=False, separators=(",", ":"))), lines
    assert lines[1].endswith(" WARNING plain old-style message")
    assert writers and set(writers) == {"httpqueue-log"}


def test_json_lines_and_exceptions_keep_their_shape(stream: io.StringIO) -> None:
    logs.configure("json", stream=stream)
    events.emit("create_batch", count=3, topics={"a": 2, "b": 1}, first_ids=["x", "y", "z"])
    try:
        raise ValueError("boom")
    except ValueError:
        logs.LOGGER.exception("failed %d times", 2)
    logs.flush()
    batch, error = (json.loads(line) for line in stream.getvalue().splitlines())
    assert batch["event"] == "create_batch" and batch["topics"] == {"a": 2, "b": 1} and batch["count"] == 3
    assert error["message"] == "failed 2 times" and "ValueError: boom" in error["exception"]


def test_the_batch_line_of_the_text_format() -> None:
    record = logging.LogRecord("httpqueue", logging.INFO, __file__, 1, "create_batch", (), None)
    record.event = "create_batch"
    record.fields = {"count": 2, "topics": {"t": 2}, "first_ids": ["a", "b"]}
    assert logs.TextFormatter().format(record).endswith(
        'INFO createTasks :{"count":2,"topics":{"t":2},"first_ids":["a","b"]}')


def test_a_disabled_level_builds_no_record_and_an_enabled_one_is_built_by_the_listener(
        stream: io.StringIO) -> None:
    logs.configure("text", logging.INFO, stream=stream)
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: t.Any, **kwargs: t.Any) -> logging.LogRecord:
        made.append(threading.current_thread().name)
        return factory(*args, **kwargs)

    logging.setLogRecordFactory(counting)
    try:
        events.emit("promoted", logging.DEBUG, count=3)
        logs.event("create", logging.DEBUG, task_id="x")
        logs.flush()
        assert made == []
        events.emit("promoted", logging.INFO, count=3)
        logs.flush()
        assert made == ["httpqueue-log"]
    finally:
        logging.setLogRecordFactory(factory)
    assert stream.getvalue().strip().endswith("INFO promoted count=3")


def test_a_record_made_late_by_the_listener_carries_the_time_and_thread_of_the_call(stream: io.StringIO) -> None:
    logs.configure("json", stream=stream)
    active = logs._active
    assert active is not None
    active.target.acquire()  # the listener takes "first" and waits to write it: "second" is made late
    try:
        logs.event("first")
        deadline = time.monotonic() + 5
        while not active.queue.empty() and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.001)
        before = time.time()
        logs.event("second")
        after = time.time()
        time.sleep(0.2)
    finally:
        active.target.release()
    logs.flush()
    second = json.loads(stream.getvalue().splitlines()[1])
    assert second["event"] == "second" and before - 0.001 <= second["ts"] <= after + 0.001


def test_stopping_writes_everything_and_later_records_directly(stream: io.StringIO) -> None:
    logs.configure("text", stream=stream)
    for n in range(500):
        logs.event("tick", n=n)
    logs.shutdown()
    assert [line.split("tick n=")[1] for line in stream.getvalue().splitlines()] == [str(n) for n in range(500)]
    logs.event("after", n=1)  # e.g. another atexit handler logging after ours ran
    assert stream.getvalue().splitlines()[-1].endswith("INFO after n=1")


def test_configuring_again_drains_the_previous_listener(stream: io.StringIO) -> None:
    logs.configure("text", stream=stream)
    logs.event("first")
    second = io.StringIO()
    logs.configure("json", stream=second)
    logs.event("second")
    logs.flush()
    assert stream.getvalue().strip().endswith("INFO first")
    assert json.loads(second.getvalue())["event"] == "second"
    assert [t.name for t in threading.enumerate()].count("httpqueue-log") == 1


def run_script(body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr
    return done


def test_forked_children_write_their_own_records_and_none_of_the_parents_twice() -> None:
    """A gunicorn-style fork (child leaves by sys.exit) and a multiprocessing child (leaves by os._exit)."""
    done = run_script("""
        import multiprocessing, os, sys
        from httpqueue import logs
        logs.configure("text")
        for n in range(200):  # queued: the listener writes them up to DRAIN_INTERVAL later, in the parent only
            logs.event("parent", n=n)
        pid = os.fork()
        if pid == 0:
            logs.event("child", how="fork")
            sys.exit(0)  # atexit stops the child's listener after writing
        os.waitpid(pid, 0)

        def work():
            logs.event("child", how="multiprocessing")  # the process ends in os._exit, after its finalizers

        proc = multiprocessing.get_context("fork").Process(target=work)
        proc.start()
        proc.join()
        logs.event("parent", n="last")
    """)
    lines = done.stderr.splitlines()
    assert [line.split("parent n=")[1] for line in lines if "parent n=" in line] == [
        *(str(n) for n in range(200)), "last"]
    assert sorted(line.split("child how=")[1] for line in lines if "child how=" in line) == [
        "fork", "multiprocessing"]


def test_a_celery_prefork_child_writes_its_records_before_it_exits() -> None:
    """billiard's pool child leaves through os._exit, after Celery's worker_process_shutdown signal."""
    done = run_script("""
        from billiard.pool import Pool
        from celery.concurrency.prefork import process_destructor
        from httpqueue import logs

        def attempt(n):
            for k in range(50):
                logs.event("attempt", topic="t", task_id=f"{n}-{k}", outcome="succeeded", duration_ms=1.0,
                           attempt=1, answer="ok")
            return n

        logs.configure("text")
        pool = Pool(processes=2, maxtasksperchild=1, on_process_exit=process_destructor)  # a child exits after its task
        assert sorted(pool.map(attempt, range(4), chunksize=1)) == [0, 1, 2, 3]
        pool.close()
        pool.join()
    """)
    written = [line for line in done.stderr.splitlines() if "result : t:" in line]
    assert len(written) == 200 and len(set(written)) == 200


def test_celerys_process_shutdown_signal_drains_the_queue_before_os_exit() -> None:
    """What the prefork child does last: Celery's worker_process_shutdown, then os._exit (no atexit)."""
    done = run_script("""
        import os
        from celery import signals
        from httpqueue import logs

        logs.configure("text")
        pid = os.fork()
        if pid == 0:
            for n in range(100):
                logs.event("child", n=n)
            signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
            os._exit(0)
        os.waitpid(pid, 0)
    """)
    assert len([line for line in done.stderr.splitlines() if "child n=" in line]) == 100
