"""The operator's commands: ``httpqueue tasks|topics|schedules|nodes|export-status``, on :mod:`httpqueue.client`.

They talk to a running API (``--url``/``HTTPQUEUE_URL``, ``--token``/
``HTTPQUEUE_TOKEN``), print a table (or ``--json``), and exit with a code a
script can branch on (:class:`ExitCode`): the same kind of failure always
gives the same code, whichever command met it.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import json
import sys
import typing as t

import click

from httpqueue.client import (
    KEEP, ApiError, Client, Conflict, HttpMethod, InvalidRequest, NotFound, Options, PayloadTooLarge, State,
    SuccessRule, Task, TaskSpec, Unauthorized, Unavailable,
)

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


class ExitCode(enum.IntEnum):
    """What the operator commands exit with."""

    OK = 0
    ERROR = 1
    """Anything else: a server error (500), an answer the client cannot read."""
    USAGE = 2
    """The command line is wrong (click's own code)."""
    NOT_FOUND = 3
    INVALID = 4
    """The API refused the request as invalid (400, 413); the message names the fields."""
    CONFLICT = 5
    """The task's state forbids it (deleting a delivered task), or an id was reused for other fields."""
    UNAUTHORIZED = 6
    UNAVAILABLE = 7
    """No answer, or 503 (Redis or the broker away) after the client's retries: try again later."""


EXIT_CODES: tuple[tuple[type[ApiError], ExitCode], ...] = (
    (NotFound, ExitCode.NOT_FOUND), (InvalidRequest, ExitCode.INVALID), (PayloadTooLarge, ExitCode.INVALID),
    (Conflict, ExitCode.CONFLICT), (Unauthorized, ExitCode.UNAUTHORIZED), (Unavailable, ExitCode.UNAVAILABLE),
)


def exit_code(error: ApiError) -> ExitCode:
    return next((code for cls, code in EXIT_CODES if isinstance(error, cls)), ExitCode.ERROR)


@dataclasses.dataclass
class Output:
    """How results are shown: a table for people, JSON for programs."""

    as_json: bool

    def one(self, item: t.Any, fields: t.Sequence[str]) -> None:
        if self.as_json:
            click.echo(to_json(item))
        else:
            row = as_dict(item)
            width = max(len(f) for f in fields)
            for name in fields:
                click.echo(f"{name:<{width}}  {cell(row.get(name))}")

    def many(self, items: t.Sequence[t.Any], columns: t.Sequence[str]) -> None:
        if self.as_json:
            click.echo(to_json(list(items)))
            return
        rows = [[cell(as_dict(item).get(c)) for c in columns] for item in items]
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
        click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
        for row in rows:
            click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())

    def fail(self, error: ApiError) -> t.NoReturn:
        if self.as_json:
            click.echo(json.dumps({"error": error.message, "status": error.status, "code": error.code,
                                   **({"fields": error.fields} if error.fields else {})}), err=True)
        else:  # the API's message already names each field at fault
            click.echo(f"httpqueue: {error.message}", err=True)
        sys.exit(exit_code(error))


def as_dict(item: t.Any) -> dict[str, t.Any]:
    return dataclasses.asdict(item) if dataclasses.is_dataclass(item) and not isinstance(item, type) else dict(item)


def to_json(item: t.Any) -> str:
    data = [as_dict(i) for i in item] if isinstance(item, list) else as_dict(item)
    return json.dumps(data, default=str, ensure_ascii=False)


def cell(value: t.Any) -> str:
    """A value in a table: enums by value, collections as compact JSON, nothing as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (dict, list)):
        return json.dumps({str(k): v for k, v in value.items() if v} if isinstance(value, dict) else value,
                          default=str, ensure_ascii=False)
    return str(value)


def api_command(group: click.Group | None, name: str, **settings: t.Any) -> t.Callable[[F], click.Command]:
    """A command of ``group`` (or a top-level one) that gets a connected :class:`Client` and an :class:`Output`
    as its first arguments, takes the connection options, and turns API errors into messages and exit codes."""
    def decorate(function: F) -> click.Command:
        @(group.command(name, **settings) if group is not None else click.command(name, **settings))
        @click.option("--url", envvar="HTTPQUEUE_URL", default=None,
                      help="The API (default http://127.0.0.1:2356; HTTPQUEUE_URL).")
        @click.option("--token", envvar="HTTPQUEUE_TOKEN", default=None, help="Bearer token (HTTPQUEUE_TOKEN).")
        @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
        @functools.wraps(function)
        def command(url: str | None, token: str | None, as_json: bool, **kwargs: t.Any) -> None:
            output = Output(as_json)
            try:
                client = Client(url, token=token)
            except ValueError as error:  # a URL that is not http(s)
                raise click.UsageError(str(error)) from None
            try:
                with client:
                    function(client, output, **kwargs)
            except ApiError as error:
                output.fail(error)
        return command
    return decorate


TASK_FIELDS = ("id", "topic", "state", "callback", "content", "due", "next_attempt", "finished", "attempts",
               "max_retry", "throttled", "last_code", "last_error", "options")
TASK_COLUMNS = ("id", "topic", "state", "due", "next_attempt", "attempts", "last_code")
TOPIC_COLUMNS = ("topic", "paused", "rate_limit", "concurrency", "running", "counts")
SCHEDULE_COLUMNS = ("id", "cron", "timezone", "paused", "next_tick", "last_task_id")
NODE_COLUMNS = ("role", "name", "host", "pid", "version", "load", "last_seen")


def _time(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(timespec="seconds")


def _task_row(task: Task) -> dict[str, t.Any]:
    """The task with its times readable: ``due`` (its first due time), the next attempt and the end."""
    return {**as_dict(task), "due": _time(task.execute_time_ms), "next_attempt": _time(task.next_attempt_ms),
            "finished": _time(task.finished_time_ms)}


# -- tasks

@click.group()
def tasks() -> None:
    """Create, inspect, delete and retry tasks."""


def _json_value(text: str | None) -> t.Any:
    if text is None:
        return ""
    try:
        return json.loads(text)
    except ValueError:
        raise click.BadParameter("is not JSON (use --text for a plain string)", param_hint="--content") from None


def _headers(pairs: t.Sequence[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    if not all(":" in p for p in pairs):
        raise click.BadParameter("give each header as Name:value", param_hint="--header")
    return {name.strip(): value.strip() for name, _, value in (p.partition(":") for p in pairs)}


def _at(text: str | None) -> float | str | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


@api_command(tasks, "create")
@click.argument("topic")
@click.argument("callback")
@click.option("--content", help="The content, as JSON (e.g. '{\"order\": 1}').")
@click.option("--text", help="The content, as a plain string.")
@click.option("--delay", type=float, help="Seconds from now.")
@click.option("--at", "execute_at", help="When: an RFC 3339 time with an offset, or Unix seconds.")
@click.option("--retry", type=int, default=0, show_default=True, help="Retries after a failed attempt.")
@click.option("--id", "task_id", help="Your own task id (a repeated create returns the first task).")
@click.option("--idempotency-key", help="Idempotency-Key (default: a fresh one, so the client's retries are safe).")
@click.option("--method", type=click.Choice([m.value for m in HttpMethod]), help="The callback's method.")
@click.option("--header", "headers", multiple=True, help="An extra callback header, Name:value (repeatable).")
@click.option("--timeout", type=float, help="Seconds the callback may take.")
@click.option("--success", type=click.Choice([s.value for s in SuccessRule]), help="What counts as done.")
@click.option("--failure-callback", help="URL notified once if the task fails for good.")
def create_task(client: Client, out: Output, topic: str, callback: str, content: str | None, text: str | None,
                delay: float | None, execute_at: str | None, retry: int, task_id: str | None,
                idempotency_key: str | None, method: str | None, headers: tuple[str, ...], timeout: float | None,
                success: str | None, failure_callback: str | None) -> None:
    """Create a task: send the content to CALLBACK after --delay seconds or --at a time."""
    if content is not None and text is not None:
        raise click.UsageError("give --content (JSON) or --text, not both")
    options = Options(HttpMethod(method) if method else None, _headers(headers), timeout,
                      SuccessRule(success) if success else None, None, failure_callback)
    spec = TaskSpec(topic, callback, text if text is not None else _json_value(content), delay, _at(execute_at),
                    retry, task_id, options)
    out.one(_task_row(client.create_task(spec, idempotency_key=idempotency_key)), TASK_FIELDS)


@api_command(tasks, "get")
@click.argument("task_id")
def get_task(client: Client, out: Output, task_id: str) -> None:
    """Show one task."""
    out.one(_task_row(client.get(task_id)), TASK_FIELDS)


@api_command(tasks, "delete")
@click.argument("task_id")
def delete_task(client: Client, out: Output, task_id: str) -> None:
    """Cancel a task that has not fired yet (exit 5 if it is being delivered or has finished)."""
    out.one(client.delete(task_id), ("id", "state", "previous_state"))


@api_command(tasks, "retry")
@click.argument("task_id")
def retry_task(client: Client, out: Output, task_id: str) -> None:
    """Attempt a failed, scheduled or retrying task now."""
    out.one(client.retry(task_id), ("id", "state", "previous_state"))


@api_command(tasks, "ls")
@click.option("--state", type=click.Choice([s.value for s in State]))
@click.option("--topic")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="Most tasks shown.")
def list_tasks(client: Client, out: Output, state: str | None, topic: str | None, limit: int) -> None:
    """List tasks, newest first, following the API's pages up to --limit."""
    found = []
    for task in client.iter_tasks(State(state) if state else None, topic, page_size=min(limit, 500)):
        found.append(task)
        if len(found) >= limit:
            break
    out.many([_task_row(x) for x in found], TASK_COLUMNS)


@api_command(tasks, "history")
@click.argument("task_id")
def task_history(client: Client, out: Output, task_id: str) -> None:
    """The task's lifecycle events, oldest first."""
    out.many([{"at": _time(e.at_ms), "event": e.name, "details": e.data} for e in client.history(task_id)],
             ("at", "event", "details"))


# -- topics

@click.group()
def topics() -> None:
    """Pause, resume, limit and purge topics; inspect and replay dead letters."""


@api_command(topics, "ls")
def list_topics(client: Client, out: Output) -> None:
    """Every topic with tasks or settings: counts per state, limits, whether paused."""
    out.many(client.list_topics(), TOPIC_COLUMNS)


@api_command(topics, "get")
@click.argument("topic")
def get_topic(client: Client, out: Output, topic: str) -> None:
    """One topic's settings, counts and circuits."""
    out.one(client.get_topic(topic), (*TOPIC_COLUMNS, "failure_callback", "circuits"))


@api_command(topics, "pause")
@click.argument("topic")
def pause_topic(client: Client, out: Output, topic: str) -> None:
    """Stop starting attempts; tasks keep their place and fire (late) after resume."""
    out.one(client.pause_topic(topic), TOPIC_COLUMNS)


@api_command(topics, "resume")
@click.argument("topic")
def resume_topic(client: Client, out: Output, topic: str) -> None:
    """Start attempts again; tasks that came due meanwhile fire now."""
    out.one(client.resume_topic(topic), TOPIC_COLUMNS)


@api_command(topics, "purge")
@click.argument("topic")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_topic(client: Client, out: Output, topic: str, yes: bool) -> None:
    """Delete every pending task of the topic."""
    if not yes:
        click.confirm(f"Delete every pending task of {topic!r}?", abort=True, err=True)
    out.one({"topic": topic, "count": client.purge_topic(topic)}, ("topic", "count"))


def _setting(text: str | None, kind: type[t.Any]) -> t.Any:
    """A topic setting from the command line: absent keeps it, ``none`` clears it."""
    if text is None:
        return KEEP
    if text.lower() == "none":
        return None
    try:
        return kind(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a {kind.__name__} (or none)") from None


@api_command(topics, "set")
@click.argument("topic")
@click.option("--rate-limit", help="Most attempts started per second (none: no limit).")
@click.option("--concurrency", help="Most attempts in flight (none: no limit).")
@click.option("--failure-callback", help="URL told of tasks that fail for good (none: nobody).")
def configure_topic(client: Client, out: Output, topic: str, rate_limit: str | None, concurrency: str | None,
                    failure_callback: str | None) -> None:
    """Set or clear the topic's limits and failure callback."""
    out.one(client.configure_topic(topic, rate_limit=_setting(rate_limit, float),
                                   concurrency=_setting(concurrency, int),
                                   failure_callback=_setting(failure_callback, str)),
            (*TOPIC_COLUMNS, "failure_callback"))


@api_command(topics, "dead-letters")
@click.argument("topic")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
def dead_letters(client: Client, out: Output, topic: str, limit: int) -> None:
    """The topic's tasks that failed for good, newest first."""
    found = []
    for task in client.iter_dead_letters(topic, page_size=min(limit, 500)):
        found.append(task)
        if len(found) >= limit:
            break
    out.many([_task_row(x) for x in found], (*TASK_COLUMNS, "last_error"))


@api_command(topics, "replay")
@click.argument("topic")
@click.argument("ids", nargs=-1)
def replay_dead_letters(client: Client, out: Output, topic: str, ids: tuple[str, ...]) -> None:
    """Attempt dead letters again now: the IDS given, or all of the topic's."""
    out.one({"topic": topic, "count": client.replay_dead_letters(topic, list(ids) or None)}, ("topic", "count"))


@api_command(topics, "dismiss")
@click.argument("topic")
@click.argument("ids", nargs=-1)
def dismiss_dead_letters(client: Client, out: Output, topic: str, ids: tuple[str, ...]) -> None:
    """Remove dead letters: the IDS given, or all of the topic's."""
    out.one({"topic": topic, "count": client.delete_dead_letters(topic, list(ids) or None)}, ("topic", "count"))


# -- schedules

@click.group()
def schedules() -> None:
    """Recurring tasks from cron expressions."""


def _schedule_row(schedule: t.Any) -> dict[str, t.Any]:
    return {**as_dict(schedule), "next_tick": _time(schedule.next_tick_ms)}


@api_command(schedules, "ls")
def list_schedules(client: Client, out: Output) -> None:
    """Every schedule with its next tick."""
    out.many([_schedule_row(s) for s in client.list_schedules()], SCHEDULE_COLUMNS)


@api_command(schedules, "get")
@click.argument("schedule_id")
def get_schedule(client: Client, out: Output, schedule_id: str) -> None:
    out.one(_schedule_row(client.get_schedule(schedule_id)), (*SCHEDULE_COLUMNS, "task"))


@api_command(schedules, "create")
@click.argument("cron")
@click.argument("topic")
@click.argument("callback")
@click.option("--id", "schedule_id", help="Its name (default: generated); an existing one is replaced.")
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--content", help="Each task's content, as JSON.")
@click.option("--retry", type=int, default=0, show_default=True)
@click.option("--paused", is_flag=True, help="Create it paused.")
def create_schedule(client: Client, out: Output, cron: str, topic: str, callback: str, schedule_id: str | None,
                    timezone: str, content: str | None, retry: int, paused: bool) -> None:
    """Create a schedule: every tick of CRON creates a task of TOPIC for CALLBACK."""
    task = TaskSpec(topic, callback, _json_value(content), retry=retry)
    out.one(_schedule_row(client.create_schedule(cron, task, id=schedule_id, timezone=timezone, paused=paused)),
            (*SCHEDULE_COLUMNS, "task"))


@api_command(schedules, "delete")
@click.argument("schedule_id")
def delete_schedule(client: Client, out: Output, schedule_id: str) -> None:
    """Delete a schedule (tasks it already created stay)."""
    client.delete_schedule(schedule_id)
    out.one({"id": schedule_id, "state": "deleted"}, ("id", "state"))


@api_command(schedules, "pause")
@click.argument("schedule_id")
def pause_schedule(client: Client, out: Output, schedule_id: str) -> None:
    out.one(_schedule_row(client.pause_schedule(schedule_id)), SCHEDULE_COLUMNS)


@api_command(schedules, "resume")
@click.argument("schedule_id")
def resume_schedule(client: Client, out: Output, schedule_id: str) -> None:
    out.one(_schedule_row(client.resume_schedule(schedule_id)), SCHEDULE_COLUMNS)


# -- nodes

def _node_row(node: t.Any) -> dict[str, t.Any]:
    row = as_dict(node)
    row.pop("raw", None)
    return {**row, "last_seen": _time(int(node.last_seen * 1000)) if node.last_seen else None}


@api_command(None, "nodes")
def nodes(client: Client, out: Output) -> None:
    """The live API processes and workers."""
    out.many([_node_row(n) for n in client.nodes()], NODE_COLUMNS)


# -- export

EXPORT_COLUMNS = ("sink", "lag", "pending", "dropped", "last_success_age", "consumers")


def _sink_row(sink: t.Any) -> dict[str, t.Any]:
    return {"sink": sink.sink, "lag": sink.lag, "pending": sink.pending, "dropped": sink.dropped,
            "last_success_age": None if sink.last_success_age is None else f"{sink.last_success_age:.1f}s",
            "consumers": ",".join(c.name for c in sink.consumers) or None}


@api_command(None, "export-status")
def export_status(client: Client, out: Output) -> None:
    """Per sink of the event export: events not read yet (lag), not acknowledged (pending), lost to the bound.

    ``httpqueue export`` is the exporter itself; this asks the API what every
    exporter's consumer group has done, so it works from anywhere.
    """
    found = client.export_status()
    if out.as_json:
        out.one(found, ())
        return
    state = f"on, at most {found.max_events} events per shard stream" if found.enabled else "off"
    click.echo(f"event export is {state} ({found.shards} shards)")
    if found.sinks:
        out.many([_sink_row(s) for s in found.sinks], EXPORT_COLUMNS)


COMMANDS: tuple[click.Command, ...] = (tasks, topics, schedules, nodes, export_status)
"""What ``httpqueue/cli.py`` registers on the ``httpqueue`` command."""
