"""Recurring schedules: a cron expression and a time zone that create a task on each tick.

Schedules are few (hundreds, not millions), so they live under one hash tag
(``hq:{sched}``): a hash of definitions (JSON) and a sorted set of the next
tick of each active schedule. A :class:`SchedulerStep` thread in every worker
takes the ticks due within :data:`LEAD_MS` and creates each tick's task with
the deterministic id ``<schedule>@<tick ms>``; the store refuses a second
create of an id, so a tick fires once however many workers race for it. The
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
import threading
import time
import typing as t
import zoneinfo

from croniter import croniter

from httpqueue import events
from httpqueue.background import ThreadStep, repeat
from httpqueue.exceptions import TaskConflict, TaskNotFound
from httpqueue.store import NewTask, TaskStore

LEAD_MS = 1500
"""How long before its tick a schedule's task is created (it is due exactly at the tick)."""

ADVANCE = """
-- advance: move a schedule's next tick from the one just handled to the next, unless another
-- worker already did (compare-and-set on the sorted set's score).
-- KEYS: next-ticks zset; ARGV: id, handled tick, next tick
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if current and tonumber(current) == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0
"""


def _publish(dispatches: t.Any, clock_ms: int) -> int:
    from httpqueue.tasks import publish

    return publish(dispatches, clock_ms)


class ScheduleNotFound(TaskNotFound):
    """No schedule has this id."""


def next_tick_ms(cron: str, tz: str, after_ms: int) -> int:
    """The first tick of ``cron`` in time zone ``tz`` strictly after ``after_ms`` (pure; unit-tested)."""
    start = datetime.datetime.fromtimestamp(after_ms / 1000, zoneinfo.ZoneInfo(tz))
    return int(round(croniter(cron, start).get_next(float) * 1000))


def check_cron(cron: str) -> str | None:
    """Why ``cron`` is not a valid expression, or None."""
    if not croniter.is_valid(cron):
        return "is not a valid cron expression (5 fields, or 6 with seconds last)"
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

    def to_api(self, next_ms: int | None) -> dict[str, t.Any]:
        return {**dataclasses.asdict(self), "next_tick_ms": None if self.paused else next_ms}


class ScheduleStore:
    """Schedules in Redis, under one hash tag."""

    def __init__(self, store: TaskStore, publish: t.Callable[..., int] | None = None) -> None:
        self.store = store
        self.publish = publish or _publish
        self.redis = store.redis
        tag = f"{store.keys.prefix}:{{sched}}"
        self.defs, self.next = f"{tag}:defs", f"{tag}:next"
        self.advance_script = self.redis.register_script(ADVANCE)

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

    def get(self, schedule_id: str) -> tuple[Schedule, int | None]:
        raw = self.redis.hget(self.defs, schedule_id)
        if raw is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id}")
        score = self.redis.zscore(self.next, schedule_id)
        return Schedule(**json.loads(raw)), None if score is None else int(score)

    def all(self) -> list[tuple[Schedule, int | None]]:
        raw = self.redis.hgetall(self.defs)
        scores = dict(self.redis.zrange(self.next, 0, -1, withscores=True))
        return [(Schedule(**json.loads(doc)), int(scores[i]) if i in scores else None) for i, doc in sorted(raw.items())]

    def delete(self, schedule_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.defs, schedule_id)
        pipe.zrem(self.next, schedule_id)
        if pipe.execute()[0] == 0:
            raise ScheduleNotFound(f"no schedule with id {schedule_id}")

    def set_paused(self, schedule_id: str, paused: bool, now_ms: int) -> tuple[Schedule, int | None]:
        schedule, _ = self.get(schedule_id)
        schedule.paused = paused
        nxt = self.save(schedule, now_ms)  # resume recomputes the next tick from now
        return schedule, None if paused else nxt

    def tick(self, now_ms: int) -> int:
        """Create the tasks of every tick due within :data:`LEAD_MS`; returns how many this call created."""
        created = 0
        for schedule_id, score in self.redis.zrangebyscore(self.next, "-inf", now_ms + LEAD_MS, withscores=True):
            tick = int(score)
            try:
                schedule, _ = self.get(schedule_id)
            except ScheduleNotFound:
                continue
            task_id = f"{schedule.id}@{tick}"
            fields = schedule.task
            try:
                created_task = self.store.create(NewTask(topic=fields["topic"], callback=fields["callback"],
                                          content=fields.get("content", ""), due_ms=tick,
                                          max_retry=fields.get("retry", 0), options=fields.get("options") or None,
                                          task_id=task_id), now_ms)
                created += 1
                if created_task.dispatch is not None:  # due within the direct window: publish it now
                    self.publish([created_task.dispatch], now_ms)
                events.emit("schedule_tick", schedule=schedule.id, task_id=task_id, tick_ms=tick,
                            topic=fields["topic"])
            except TaskConflict:
                pass  # another worker created this tick's task
            nxt = next_tick_ms(schedule.cron, schedule.timezone, max(tick, now_ms))
            if self.advance_script(keys=[self.next], args=[schedule.id, tick, nxt]):
                schedule.last_tick_ms, schedule.last_task_id = tick, task_id
                self.redis.hset(self.defs, schedule.id, json.dumps(dataclasses.asdict(schedule)))
        return created


class SchedulerStep(ThreadStep):
    """Celery worker bootstep: a thread that creates the tasks of due schedule ticks."""

    label = "httpqueue-scheduler"

    def loop(self, worker: t.Any) -> t.Callable[[threading.Event], None]:
        from httpqueue import context

        ctx = context.current()
        schedules = ScheduleStore(ctx.store)
        interval = min(0.25, ctx.settings.promoter_interval)

        def tick() -> bool:
            schedules.tick(int(time.time() * 1000))
            return False

        return lambda stop: repeat(tick, stop, interval, "scheduler")
