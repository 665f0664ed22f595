"""Recurring schedules: a cron expression and a time zone that create a task on each tick.

Schedules are few (hundreds, not millions), so they live under one hash tag
(``hq:{sched}``, see :mod:`httpqueue.store.keys`): a hash of definitions (JSON)
and a sorted set of the next tick of each active schedule. A scheduler thread
in every worker (:mod:`httpqueue.worker.scheduler`) takes the ticks due within
:data:`LEAD_MS` and creates each tick's task through the task service with the
deterministic id ``<schedule>@<tick ms>``; the store refuses a second create
of an id, so a tick fires once however many workers race for it. The
task is created ahead of its tick and due exactly at it, so the timer fires
it on time. The next tick is then advanced with a compare-and-set, from the
later of the tick and now: after downtime at most the latest missed tick
fires (late), never a burst of them.

Cron expressions are parsed by croniter (5 fields, or 6 with seconds last);
time zones are IANA names (``zoneinfo``), so daylight-saving changes follow
croniter's rules (a time that does not exist that day fires at the next one
that does).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import typing as t
import zoneinfo

from croniter import CroniterBadDateError, croniter

from httpqueue.exceptions import TaskNotFound
from httpqueue.store import scripts
from httpqueue.store.scripts import translate_errors
from httpqueue.store.tasks import TaskStore

LEAD_MS = 1500
"""How long before its tick a schedule's task is created (it is due exactly at the tick)."""

class ScheduleNotFound(TaskNotFound):
    """No schedule has this id."""


def next_tick_ms(cron: str, tz: str, after_ms: int) -> int:
    """The first tick of ``cron`` in time zone ``tz`` strictly after ``after_ms`` (pure; unit-tested)."""
    start = datetime.datetime.fromtimestamp(after_ms / 1000, zoneinfo.ZoneInfo(tz))
    return int(round(croniter(cron, start).get_next(float) * 1000))


def check_cron(cron: str) -> str | None:
    """Why ``cron`` is not a valid expression, or None.

    A well-formed expression can still never match (``0 0 31 2 *``: 31
    February); croniter then raises when asked for the next tick, which the
    save did (a 500), so it is asked here once.
    """
    if not croniter.is_valid(cron):
        return "is not a valid cron expression (5 fields, or 6 with seconds last)"
    try:
        croniter(cron, datetime.datetime.now(datetime.timezone.utc)).get_next(float)
    except CroniterBadDateError:
        return "never matches a date (such as 31 February), so it would never tick"
    return None


def check_timezone(tz: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "is not an IANA time zone name (e.g. Europe/Berlin)"
    return None


@dataclasses.dataclass
class Schedule:
    id: str
    cron: str
    timezone: str
    task: dict[str, t.Any]  # the validated create fields (topic, callback, content, retry, options)
    paused: bool = False
    created_ms: int = 0
    last_tick_ms: int | None = None
    last_task_id: str | None = None
    revision: int = 0  # the etcd revision this definition was mirrored from (0: kept in Redis only)

    def definition(self) -> dict[str, t.Any]:
        """What etcd keeps of it: everything but what ticking records and the revision etcd gives it."""
        doc = dataclasses.asdict(self)
        for name in ("last_tick_ms", "last_task_id", "revision"):
            doc.pop(name)
        return doc

    @classmethod
    def from_doc(cls, doc: t.Mapping[str, t.Any]) -> Schedule:
        """From a stored document; fields this version does not know are ignored (a newer node wrote them)."""
        return cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls) if f.name in doc})

    def to_api(self, next_ms: int | None) -> dict[str, t.Any]:
        doc = dataclasses.asdict(self)
        doc.pop("revision")
        return {**doc, "next_tick_ms": None if self.paused else next_ms}


class ScheduleStore:
    """Schedules in Redis, under one hash tag; every Redis error is a :class:`StoreUnavailable` (503)."""

    def __init__(self, store: TaskStore) -> None:
        self.redis = store.redis
        self.defs, self.next = store.keys.schedule_defs(), store.keys.schedule_next()
        self._scripts = scripts.register(self.redis, "advance", "mirror_schedule")

    @translate_errors
    def save(self, schedule: Schedule, now_ms: int) -> int:
        """Create or replace ``schedule``; returns its next tick."""
        nxt = next_tick_ms(schedule.cron, schedule.timezone, now_ms)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.defs, schedule.id, json.dumps(dataclasses.asdict(schedule)))
        if schedule.paused:
            pipe.zrem(self.next, schedule.id)
        else:
            pipe.zadd(self.next, {schedule.id: nxt})
        pipe.execute()
        return nxt

    @translate_errors
    def get(self, schedule_id: str) -> tuple[Schedule, int | None]:
        """A schedule and its next tick (None while paused)."""
        raw = self.redis.hget(self.defs, schedule_id)
        if raw is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id}")
        score = self.redis.zscore(self.next, schedule_id)
        return Schedule.from_doc(json.loads(raw)), None if score is None else int(score)

    @translate_errors
    def all(self) -> list[tuple[Schedule, int | None]]:
        """Every schedule with its next tick, by id."""
        raw = t.cast(dict[str, str], self.redis.hgetall(self.defs))
        ticks = t.cast(list[tuple[str, float]], self.redis.zrange(self.next, 0, -1, withscores=True))
        scores = dict(ticks)
        return [(Schedule.from_doc(json.loads(doc)), int(scores[i]) if i in scores else None)
                for i, doc in sorted(raw.items())]

    @translate_errors
    def delete(self, schedule_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.defs, schedule_id)
        pipe.zrem(self.next, schedule_id)
        if pipe.execute()[0] == 0:
            raise ScheduleNotFound(f"no schedule with id {schedule_id}")

    @translate_errors
    def set_paused(self, schedule_id: str, paused: bool, now_ms: int) -> tuple[Schedule, int | None]:
        schedule, _ = self.get(schedule_id)
        schedule.paused = paused
        nxt = self.save(schedule, now_ms)  # resume recomputes the next tick from now
        return schedule, None if paused else nxt

    @translate_errors
    def mirror(self, schedule_id: str, definition: t.Mapping[str, t.Any] | None, revision: int, now_ms: int) -> bool:
        """Copy a schedule as etcd held it at ``revision`` (None: deleted) into Redis, for the ticker.

        Any node may call this for any etcd event, in any order: a write older
        than what Redis holds is dropped (``mirror_schedule.lua``). The ticks
        recorded so far are kept. False: a later revision was there.
        """
        if definition is None:
            return bool(self._scripts["mirror_schedule"](keys=[self.defs, self.next],
                                                        args=[schedule_id, revision, "", ""]))
        schedule = Schedule.from_doc({**definition, "id": schedule_id, "revision": revision})
        raw = self.redis.hget(self.defs, schedule_id)
        if raw is not None:
            before = Schedule.from_doc(json.loads(raw))
            schedule.last_tick_ms, schedule.last_task_id = before.last_tick_ms, before.last_task_id
        nxt = "" if schedule.paused else next_tick_ms(schedule.cron, schedule.timezone, now_ms)
        return bool(self._scripts["mirror_schedule"](
            keys=[self.defs, self.next], args=[schedule_id, revision, json.dumps(dataclasses.asdict(schedule)), nxt]))

    @translate_errors
    def mirrored(self) -> list[str]:
        """Ids of the schedules that came from etcd (the others were made in Redis-only mode)."""
        raw = t.cast(dict[str, str], self.redis.hgetall(self.defs))
        return sorted(i for i, doc in raw.items() if json.loads(doc).get("revision"))

    @translate_errors
    def due(self, now_ms: int) -> list[tuple[Schedule, int]]:
        """Schedules whose next tick is within :data:`LEAD_MS`, with that tick."""
        found: list[tuple[Schedule, int]] = []
        ticks = t.cast(list[tuple[str, float]],
                       self.redis.zrangebyscore(self.next, "-inf", now_ms + LEAD_MS, withscores=True))
        for schedule_id, score in ticks:
            try:
                schedule, _ = self.get(str(schedule_id))
            except ScheduleNotFound:
                continue  # deleted since
            found.append((schedule, int(score)))
        return found

    @translate_errors
    def advance(self, schedule: Schedule, tick: int, task_id: str, now_ms: int) -> bool:
        """Move the schedule's next tick past ``tick``, unless another worker did; record the tick made."""
        nxt = next_tick_ms(schedule.cron, schedule.timezone, max(tick, now_ms))
        if not self._scripts["advance"](keys=[self.next], args=[schedule.id, tick, nxt]):
            return False
        schedule.last_tick_ms, schedule.last_task_id = tick, task_id
        self.redis.hset(self.defs, schedule.id, json.dumps(dataclasses.asdict(schedule)))
        return True
