"""Topics as queues: pause, rate and concurrency limits, circuit breakers, purge, dead letters.

A topic's controls live under the topic's own Redis hash tag (see
:meth:`httpqueue.keys.Keys.for_topic`), so the check made for every delivery
message (``admit.lua``) and the bookkeeping after it (``finish.lua``) each
touch one slot and hold across any number of workers:

* **pause** holds the topic's tasks in their shard's ``held`` set at their own
  due time; resume puts them back in the timer, so they fire late, in order,
  and none is lost;
* **rate limit** is a GCRA schedule: each task gets a slot ``1/rate`` seconds
  after the previous one; a task whose slot is later waits in the timer until
  then, and passes without taking another slot when it comes back;
* **concurrency limit** counts attempts in flight in a sorted set scored by
  lease expiry (a worker that dies frees its places when the lease runs out);
* **circuit breaker** per callback host: ``breaker_threshold`` failures in a
  row open it for ``breaker_cooldown`` seconds (doubling on each reopening);
  then one probe attempt decides whether it closes.

Tasks turned away are not attempted and their attempt is not counted: the
delivery task settles them as ``deferred`` (back to the timer) or ``held``.
Purge and dead-letter replay walk the shards with the existing listing script
and reuse delete and requeue, so those state changes stay in one place.
"""
from __future__ import annotations

import dataclasses
import json
import typing as t
from urllib.parse import urlsplit

from httpqueue.config import Settings
from httpqueue.exceptions import TaskConflict, TaskNotFound
from httpqueue.states import PENDING_STATES, AdmitAction, State
from httpqueue.store import scripts
from httpqueue.store.records import TaskRecord
from httpqueue.store.scripts import ScriptCalls, translate_errors
from httpqueue.store.tasks import TaskStore

#: Settings a topic may have, with the hash field each is stored in.
CONFIG_FIELDS = {"rate_limit": "rate", "concurrency": "conc", "failure_callback": "fcb",
                 "breaker_threshold": "bth", "breaker_cooldown": "bcd"}


def hash_value(name: str, value: t.Any) -> str:
    """A setting as its hash field holds it: the breaker cooldown in ms (what ``finish.lua`` counts in)."""
    return str(int(value * 1000)) if name == "breaker_cooldown" else str(value)


def host_of(url: str) -> str:
    """The circuit-breaker key of a callback URL: its ``host:port``, lowercased."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What ``admit`` decided for one task: go now, hold (paused), or wait until ``until_ms``."""

    action: AdmitAction
    until_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> Verdict:
        """From ``admit.lua``'s ``action[:until_ms]``."""
        action, _, when = text.partition(":")
        return cls(AdmitAction(action), int(float(when)) if when else 0)


@dataclasses.dataclass(frozen=True)
class Admission:
    """``admit``'s answer for one message: a verdict per task and the topic's failure callback."""

    verdicts: list[Verdict]
    failure_callback: str | None


@dataclasses.dataclass(frozen=True)
class TopicSettings:
    """A topic's settings as one document: what etcd holds per topic when it is configured.

    Without etcd the same settings are fields of the topic's Redis hash, changed
    one at a time; with it, the document is the unit of a compare-and-swap, and
    :meth:`TopicControls.mirror` copies it into that hash for ``admit.lua``.
    """

    paused: bool = False
    rate_limit: float | None = None
    concurrency: int | None = None
    failure_callback: str | None = None
    breaker_threshold: int | None = None
    breaker_cooldown: float | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TopicSettings:
        """From :meth:`to_json`; fields this version does not know are ignored (a newer node wrote them)."""
        doc = json.loads(text)
        return cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls) if f.name in doc})

    def hash_fields(self) -> list[str]:
        """paused, then each of :data:`CONFIG_FIELDS`, as ``mirror_topic.lua`` takes them ('' clears one)."""
        values = [(name, getattr(self, name)) for name in CONFIG_FIELDS]
        return ["1" if self.paused else "0", *("" if v is None else hash_value(n, v) for n, v in values)]


@dataclasses.dataclass(frozen=True)
class Circuit:
    """The breaker of one callback host of a topic."""

    host: str
    failures: int
    open_until_ms: int | None
    openings: int

    def state(self, now_ms: int) -> str:
        if self.open_until_ms is None:
            return "closed"
        return "open" if self.open_until_ms > now_ms else "half-open"


class TopicControls:
    """Reads and changes topic controls; the delivery task's admission step."""

    def __init__(self, store: TaskStore, settings: Settings) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.settings = settings
        self._scripts = scripts.register(self.redis, "admit", "finish", "unhold", "mirror_topic")

    # -- the delivery path

    @translate_errors
    def admit(self, topic: str, tasks: t.Sequence[TaskRecord], now_ms: int) -> Admission:
        """Verdicts for claimed ``tasks`` of ``topic``, in order."""
        k = self.keys.for_topic(topic)
        s = self.settings
        args: list[t.Any] = [now_ms, s.attempt_lease_ms, s.topic_wait_ms, s.callback_timeout_ms + 1000]
        for task in tasks:
            args += [task.id, host_of(task.callback), "" if task.slot_ms is None else task.slot_ms]
        reply = self._scripts["admit"](keys=[k.config, k.running, k.rate, k.breaker], args=args)
        return Admission([Verdict.parse(v) for v in reply[1:]], reply[0] or None)

    @translate_errors
    def finish(self, topic: str, outcomes: t.Sequence[tuple[str, str, str]], now_ms: int,
               calls: ScriptCalls | None = None) -> t.Any:
        """Release running places and feed the breakers: ``outcomes`` are (task id, host, ok|fail|skip).

        With ``calls``, the call joins that round trip (the delivery task's settle) instead.
        """
        k = self.keys.for_topic(topic)
        s = self.settings
        args: list[t.Any] = [now_ms, s.breaker_threshold, s.breaker_cooldown_ms, s.breaker_cooldown_max_ms]
        for item in outcomes:
            args += list(item)
        if calls is not None:
            calls.add(self._scripts["finish"], [k.running, k.breaker, k.config], args)
            return None
        return self._scripts["finish"](keys=[k.running, k.breaker, k.config], args=args)

    # -- settings

    @translate_errors
    def get(self, topic: str, now_ms: int) -> dict[str, t.Any]:
        """A topic's settings, pause state, running attempts and circuits."""
        k = self.keys.for_topic(topic)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.config)
        pipe.zcount(k.running, now_ms, "+inf")
        pipe.hgetall(k.breaker)
        config, running, breaker = pipe.execute()
        return {
            "topic": topic, "paused": config.get("paused") == "1",
            "rate_limit": float(config["rate"]) if config.get("rate") else None,
            "concurrency": int(config["conc"]) if config.get("conc") else None,
            "failure_callback": config.get("fcb"), "running": running,
            "breaker_threshold": int(config["bth"]) if config.get("bth") else None,
            "breaker_cooldown": int(config["bcd"]) / 1000 if config.get("bcd") else None,
            "circuits": [dataclasses.asdict(c) | {"state": c.state(now_ms)} for c in _circuits(breaker)],
        }

    @translate_errors
    def configure(self, topic: str, changes: t.Mapping[str, t.Any]) -> None:
        """Set (or, with ``None``, clear) any of :data:`CONFIG_FIELDS`."""
        k = self.keys.for_topic(topic)
        pipe = self.redis.pipeline(transaction=False)
        for name, value in changes.items():
            field = CONFIG_FIELDS[name]
            if value is None:
                pipe.hdel(k.config, field)
            else:
                pipe.hset(k.config, field, hash_value(name, value))
        pipe.hset(k.config, "name", topic)
        pipe.sadd(self.keys.topics(), topic)
        pipe.execute()

    @translate_errors
    def configured(self) -> list[str]:
        """Topics that have settings (the set is touched only when settings change)."""
        return sorted(str(name) for name in self.redis.smembers(self.keys.topics()))

    @translate_errors
    def pause(self, topic: str) -> None:
        """From now on no attempt of ``topic`` starts; its tasks wait in ``held``."""
        k = self.keys.for_topic(topic)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(k.config, mapping={"paused": "1", "name": topic})
        pipe.sadd(self.keys.topics(), topic)
        pipe.execute()

    @translate_errors
    def resume(self, topic: str) -> int:
        """Let ``topic`` fire again; its held tasks go back to the timer. Returns how many."""
        self.redis.hset(self.keys.for_topic(topic).config, "paused", "0")
        return self.unhold(topic)

    @translate_errors
    def mirror(self, topic: str, settings: TopicSettings, revision: int) -> int:
        """Copy ``topic``'s settings as etcd held them at ``revision`` into its Redis hash.

        Any node may call this for any etcd event, in any order: a write older
        than what the hash holds is dropped (``mirror_topic.lua``). The node
        whose write resumed the topic puts its held tasks back in the timer;
        returns how many it moved.
        """
        k = self.keys.for_topic(topic)
        resumed = self._scripts["mirror_topic"](keys=[k.config], args=[revision, topic, *settings.hash_fields()])
        if int(resumed) < 0:
            return 0
        self.redis.sadd(self.keys.topics(), topic)
        return self.unhold(topic) if int(resumed) == 1 else 0

    @translate_errors
    def unhold(self, topic: str) -> int:
        """Put the held tasks of ``topic`` back in the timer, a batch at a time; returns how many."""
        moved = 0
        for shard in range(self.keys.shards):
            offset = 0
            while offset >= 0:
                offset, count = self._scripts["unhold"](
                    keys=[self.keys.held(shard), self.keys.timer(shard)],
                    args=[topic, self.keys.task_prefix(shard), offset, 500])
                moved += int(count)
        return moved

    # -- bulk actions, built on the store's own listing, delete and requeue

    @translate_errors
    def purge(self, topic: str, now_ms: int) -> int:
        """Delete every pending task of ``topic`` (scheduled, queued, retrying, held). Returns how many."""
        return sum(self._each(topic, state, lambda i: self.store.delete(i, now_ms))
                   for state in sorted(PENDING_STATES))

    @translate_errors
    def replay_dead(self, topic: str, now_ms: int, ids: t.Sequence[str] | None = None) -> int:
        """Requeue dead letters of ``topic`` (all, or the given ids). Returns how many."""
        if ids is not None:
            return sum(self._one_dead(topic, i, lambda i: self.store.requeue(i, now_ms)) for i in ids)
        return self._each(topic, State.FAILED, lambda i: self.store.requeue(i, now_ms))

    @translate_errors
    def dismiss_dead(self, topic: str, now_ms: int, ids: t.Sequence[str] | None = None) -> int:
        """Remove dead letters of ``topic`` (they stay queryable as deleted until the retention ends)."""
        action = lambda i: self.store.delete(i, now_ms, dismiss_failed=True)  # noqa: E731
        if ids is not None:
            return sum(self._one_dead(topic, i, action) for i in ids)
        return self._each(topic, State.FAILED, action)

    def _one_dead(self, topic: str, task_id: str, action: t.Callable[[str], t.Any]) -> int:
        task = self.store.get(task_id)
        if task.topic != topic or task.state is not State.FAILED:
            raise TaskConflict(f"task {task_id} is not a dead letter of topic {topic!r}", state=task.state.value)
        action(task_id)
        return 1

    def _each(self, topic: str, state: State, action: t.Callable[[str], t.Any], pages: int = 100_000) -> int:
        """Apply ``action`` to every task of ``topic`` in ``state``, a listing page at a time.

        Acted-on tasks leave the listed sets, which shifts the offsets a cursor
        holds, so after a page with hits the walk starts over (finding the next
        ones first); a page without hits continues from its cursor.
        """
        done, cursor = 0, None
        for _ in range(pages):
            page = self.store.list_tasks(state, topic, cursor, limit=500)
            acted = 0
            for task in page.tasks:
                try:
                    action(task.id)
                    acted += 1
                except (TaskConflict, TaskNotFound):
                    pass  # it moved on (fired, finished) since it was listed
            done += acted
            if acted:
                cursor = None
            elif page.cursor is None:
                break
            else:
                cursor = page.cursor
        return done


def _circuits(breaker: t.Mapping[str, str]) -> list[Circuit]:
    hosts = sorted({field[2:] for field in breaker if field[:2] in ("f:", "o:", "n:")})
    return [Circuit(h, int(breaker.get(f"f:{h}", 0)),
                    int(float(breaker[f"o:{h}"])) if f"o:{h}" in breaker else None,
                    int(breaker.get(f"n:{h}", 0))) for h in hosts]
