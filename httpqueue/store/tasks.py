"""The task store: task metadata, the timer and the in-flight leases, in Redis.

Redis is the source of truth; Celery messages only say "deliver task X,
generation G, at time T". Every change of a task's state is one Lua script
(``lua/*.lua``, each saying what it makes atomic), so API nodes, promoters and
delivery tasks running at once cannot lose or double a task:

* ``create`` parks a task in the timer (or, when its due hour starts more
  than :data:`HOUR_REACH_MS` ahead, in the list of that hour: see
  :meth:`Keys.hours`), or marks it queued when it is due within ``direct_ms``
  (the caller then publishes its ETA message);
* ``promote`` moves the hour lists that came within reach into the timer, then
  due-soon tasks from the timer to queued, bumping their generation;
  ``reclaim`` re-issues queued or delivering tasks whose lease ran out;
* ``claim`` lets exactly one message of the current generation start an attempt;
* ``settle`` records its outcome; ``delete`` cancels; ``purge`` forgets old tasks.

Times are integer milliseconds since the Unix epoch, passed in by the caller, so
tests can drive the clock.
"""
from __future__ import annotations

import dataclasses
import secrets
import typing as t

from httpqueue import jsoncodec
from httpqueue.connections import StoreClient
from httpqueue.exceptions import TaskConflict, TaskNotFound
from httpqueue.states import IN_FLIGHT_STATES, PARKED_OUTCOMES, WAITING_STATES, Outcome, State
from httpqueue.store import scripts
from httpqueue.store.keys import Keys
from httpqueue.store.records import (
    Changed, Created, Cursor, Dispatch, NewTask, Page, Settlement, TaskRecord, new_ids,
)
from httpqueue.store.scripts import ScriptCalls, translate_errors

HISTORY_MAX = 50
"""Most lifecycle events kept per task (the oldest are dropped)."""

MAX_LOST = 3
"""How many times a task may be lost by dying workers before it fails for good."""

#: Where each state's tasks are found, in listing order (``hours``: the hour lists, which hold only new tasks).
LIST_SOURCES = (
    ("inflight", IN_FLIGHT_STATES),
    ("timer", WAITING_STATES),
    ("hours", frozenset({State.SCHEDULED})),
    ("held", WAITING_STATES),
    ("dead", frozenset({State.FAILED})),
    ("done", frozenset({State.SUCCEEDED, State.DELETED})),
)

LIST_SCAN = 500
"""Most set entries one listing script call looks at (so one call blocks Redis for well under a millisecond)."""

LIST_BUDGET = 50_000
"""Most set entries one listing page looks at, over all its calls (a filter matching few of many tasks)."""

LIST_CALLS_PER_ROUND = 64
"""Most listing script calls sent in one round trip."""

HOUR_REACH_MS = 3_600_000
"""A task created due in an hour that starts later than this from now waits in an hour list, not the timer.

An hour list entry costs about 20 B of Redis memory where a timer entry costs
about 128 B (docs/benchmarks.rst); a promoter pass moves the hour's ids into
the timer once the hour starts within this reach, so they are in the timer
an hour or more before they are due (see :meth:`Keys.hours`)."""

HOUR_MOVE_LIMIT = 2_000
"""Most hour-list entries one promote call moves into the timer, so one call blocks Redis for a few ms at most.

A bigger hour takes several passes (four a second): 10^7 tasks due in one hour
of one shard take about twenty minutes of the hour's reach."""



class TaskStore:
    """Task metadata and timers in one Redis (or one Redis Cluster, by hash tags)."""

    def __init__(self, client: StoreClient, keys: Keys, *, horizon_ms: int, lease_ms: int,
                 retention_ms: int, batch: int = 2000, dead_retention_ms: int | None = None,
                 direct_ms: int | None = None, min_replicas: int = 0, replica_timeout_ms: int = 1000) -> None:
        self.redis = client
        self.keys = keys
        self.horizon_ms = horizon_ms
        # created tasks due sooner than this are published at once; later ones wait for a promoter
        # pass, which batches the tasks of all shards due together into shared messages
        self.direct_ms = horizon_ms if direct_ms is None else min(direct_ms, horizon_ms)
        # creates wait until this many replicas have them (Redis WAIT), closing async replication's loss window
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.lease_ms = lease_ms
        self.retention_ms = retention_ms
        self.dead_retention_ms = retention_ms if dead_retention_ms is None else dead_retention_ms
        self.batch = batch
        # never shorter than the horizon: an hour list is in the timer before its tasks are due to be promoted
        self.reach_ms = max(HOUR_REACH_MS, horizon_ms)
        self._scripts = scripts.register(client, "create", "promote", "reclaim", "claim", "settle", "delete",
                                         "purge", "requeue", "listing", "orphans", "hold")

    # -- the API side

    @translate_errors
    def create(self, task: NewTask, now_ms: int, task_id: str | None = None) -> Created:
        """Store a task. If its id is taken: a replay (same fingerprint) or :class:`TaskConflict`."""
        if task_id is not None:
            task = dataclasses.replace(task, task_id=task_id)
        [result] = self.create_many([task], now_ms, raise_conflicts=True)
        assert isinstance(result, Created)
        return result

    @translate_errors
    def create_many(self, tasks: t.Sequence[NewTask], now_ms: int,
                    raise_conflicts: bool = False) -> list[Created | TaskConflict]:
        """Store many tasks in one round trip: one ``create`` script call per shard, pipelined.

        Each result is :class:`Created` (new, or ``replayed`` when the same id
        came with the same fingerprint) or the :class:`TaskConflict` of an id
        taken by a different request (raised instead with ``raise_conflicts``).
        """
        ids = [task.task_id or "" for task in tasks]
        missing = ids.count("")
        if missing:
            fresh = iter(new_ids(missing))
            ids = [task_id or next(fresh) for task_id in ids]
        # a keyed create stores its fingerprint with a mark of this very call: a run of the same call sent
        # again (its reply lost) finds its own mark, a concurrent create with the same key finds another's
        marks = [f"{task.fingerprint}|{secrets.token_hex(4)}" if task.fingerprint else "" for task in tasks]
        by_shard: dict[int, list[int]] = {}
        for index, task_id in enumerate(ids):
            by_shard.setdefault(self.keys.shard_of(task_id), []).append(index)
        calls = ScriptCalls(self.redis, self.min_replicas, self.replica_timeout_ms)
        for shard, indexes in by_shard.items():
            shard_keys, prefix, hour_list_prefix = self.keys.for_create(shard)
            keys = list(shard_keys)
            args: list[t.Any] = [now_ms, self.direct_ms, self.lease_ms, self.reach_ms, hour_list_prefix]
            for index in indexes:
                keys.append(prefix + ids[index])
                args += self._arguments(ids[index], tasks[index], marks[index])
            calls.add(self._scripts["create"], keys, args)
        replies: list[tuple[int, t.Any]] = [(0, None)] * len(ids)
        for indexes, reply in zip(by_shard.values(), calls.execute() if calls.calls else []):
            for n, index in enumerate(indexes):
                replies[index] = (int(reply[2 * n]), reply[2 * n + 1])
        results: list[Created | TaskConflict] = []
        seen: set[str] = set()  # an id repeated in a batch: the later items are replays of the first
        for task_id, task, mark, (code, detail) in zip(ids, tasks, marks, replies):
            if code == -1 and detail == mark and task_id not in seen:
                again = self._ran_before(task_id, task, now_ms)
                if again is not None:
                    seen.add(task_id)
                    results.append(again)
                    continue
            seen.add(task_id)
            if code == -1:
                if task.fingerprint and str(detail).partition("|")[0] == task.fingerprint:
                    results.append(Created(task_id, None, replayed=True))
                    continue
                conflict = TaskConflict(
                    f"a task with id {task_id} exists and was created by a different request; "
                    "an id (or Idempotency-Key) may be reused only with the same fields", state="exists")
                if raise_conflicts:
                    raise conflict
                results.append(conflict)
            else:
                results.append(Created(task_id, Dispatch(task_id, int(detail), task.due_ms, 0, task.topic)
                                       if code == 1 else None))
        return results

    def _ran_before(self, task_id: str, task: NewTask, now_ms: int) -> Created | None:
        """This very create, if the id it found taken was stored by an earlier run of this same call.

        A create can run twice: a retry re-sends it when its reply was lost
        (a timeout, a connection reset, a cluster node failing over), and the
        first run may have stored it. The second run then finds its own task.
        That is this create's result, not a conflict and not a replay of an
        earlier request: a task still queued at generation 1 is handed out
        again (a second message of the same generation is dropped by
        ``claim``). A keyed create knows its own run by the mark stored with
        its fingerprint (the caller compared it); an unkeyed one's id was
        generated here, so no other request can hold it, and the task must
        hold exactly what this call wrote, at its own ``now_ms``. Read only on
        this rare path, so creates cost nothing more.
        """
        cr, tp, cb, ct, due, ex, st, gen = self.redis.hmget(
            self.keys.task(task_id), "cr", "tp", "cb", "ct", "due", "ex", "st", "gen")
        wrote = (str(now_ms), task.topic, task.callback, jsoncodec.dumps(task.content).decode(), str(task.due_ms))
        if not task.fingerprint and (cr, tp, cb, ct, ex or due) != wrote:
            return None
        queued = st == State.QUEUED.value and gen == "1"
        return Created(task_id, Dispatch(task_id, 1, task.due_ms, 0, task.topic) if queued else None)

    @staticmethod
    def _arguments(task_id: str, task: NewTask, mark: str) -> list[t.Any]:
        """One task's ARGV group of ``create.lua`` (fixed positions; '' or 0 where it has nothing).

        ``mark``: what is stored as the fingerprint, ``<fingerprint>|<this call's mark>`` for a keyed task, ''
        for another.
        """
        options = task.options
        timeout = options.get("timeout") if options else None
        return [task_id, task.due_ms, task.topic, task.callback, jsoncodec.dumps(task.content), task.max_retry,
                jsoncodec.dumps(options) if options else "", int(timeout * 1000) if timeout else "",
                mark]

    @translate_errors
    def get(self, task_id: str) -> TaskRecord:
        h = t.cast("dict[str, str]", self.redis.hgetall(self.keys.task(task_id)))
        if not h:
            raise TaskNotFound(f"no task with id {task_id}")
        return TaskRecord.from_hash(task_id, h)

    @translate_errors
    def history(self, task_id: str) -> list[dict[str, t.Any]]:
        """The task's recorded lifecycle events, oldest first (``created`` is derived)."""
        record = self.get(task_id)
        events = [jsoncodec.loads(e) for e in self.redis.lrange(self.keys.history(task_id), 0, -1)]
        return [{"event": "created", "t": record.created_ms, "due": record.execute_ms}, *events]

    @translate_errors
    def delete(self, task_id: str, now_ms: int, *, dismiss_failed: bool = False) -> Changed:
        """Cancel a pending task (or, with ``dismiss_failed``, remove a dead letter). Deleting twice is not an error."""
        k = self.keys.for_task(task_id)
        event = jsoncodec.dumps({"event": "deleted", "t": now_ms})
        reply = self._scripts["delete"](
            keys=k.as_list(),
            args=[task_id, now_ms, self.retention_ms, event, HISTORY_MAX, 1 if dismiss_failed else 0])
        if reply[0] == "missing":
            raise TaskNotFound(f"no task with id {task_id}")
        state = State(reply[1])
        if reply[0] == "refused" and state is not State.DELETED:
            raise TaskConflict(_refusal(state), state=state.value)
        return Changed(task_id, state, reply[2])

    @translate_errors
    def requeue(self, task_id: str, now_ms: int) -> Changed:
        """Attempt a failed, scheduled or retrying task now (the dashboard's "retry now")."""
        k = self.keys.for_task(task_id)
        event = jsoncodec.dumps({"event": "requeued", "t": now_ms})
        reply = self._scripts["requeue"](keys=k.as_list(),
                                         args=[task_id, now_ms, event, HISTORY_MAX])
        if reply[0] == "missing":
            raise TaskNotFound(f"no task with id {task_id}")
        if reply[0] == "refused":
            raise TaskConflict(f"a {reply[1]} task cannot be retried now", state=reply[1])
        return Changed(task_id, State(reply[1]), reply[2])

    @translate_errors
    def list_tasks(self, state: State | None = None, topic: str | None = None, cursor: str | None = None,
                   limit: int = 50, budget: int = LIST_BUDGET) -> Page:
        """A page of tasks filtered by state and topic, and the cursor of the next page.

        Pages walk the sorted sets that already exist (in-flight, timer, hour
        lists, held, dead, done: the last two newest first), so listing adds no
        per-task index. The order is fixed: set by set, shard by shard, position
        by position (the hour lists of a shard: hour by hour, each in creation
        order); a cursor is ``set.shard.position`` in that order, so pages
        neither repeat nor skip a task that stays where it is.

        A page holds ``limit`` tasks whenever that many match, and the cursor
        is null once nothing matches beyond it: the walk looks for ``limit + 1``
        matches, and the cursor points at the extra one (the way Stripe and
        Cloud Tasks page, a client never follows a cursor to an empty page).
        The shards are scanned in parallel: after a first call on the shard the
        cursor points at (usually enough: a cursor points at a match), every
        shard still needed gets one script call per round, all of a round in
        one round trip (:class:`ScriptCalls`), and a shard's matches are kept
        until the shards before it are exhausted, so nothing is scanned twice.

        A page inspects at most ``budget`` set entries: a filter that matches
        few of very many tasks can run out of it, and only then is a page short
        (even empty) with a cursor, which continues where the scan stopped.
        """
        sources = [name for name, states in LIST_SOURCES if state is None or state in states]
        shards = self.keys.shards
        where = Cursor.parse(cursor) if cursor else Cursor(0, 0, 0)
        segments = len(sources) * shards  # segment = one shard of one source, in listing order
        start = where.source * shards + where.shard if where.shard < shards else (where.source + 1) * shards
        need = limit + 1
        frontier = {start: where.offset}  # segment -> where its next scan starts (-1: exhausted; absent: 0)
        pending: dict[int, list[tuple[int, str]]] = {}  # matches of segments after ``current``, in order
        found: list[tuple[int, int, str]] = []  # (segment, position, id) of the matches, in listing order
        current = start  # the first segment not yet exhausted: everything before it is in ``found``
        fan_out = False
        while current < segments and len(found) < need and budget > 0:
            calls = ScriptCalls(self.redis)
            planned: list[tuple[int, int]] = []  # (segment, offset) of each call
            known = len(found)
            for segment in range(current, segments):
                if known >= need or budget <= 0 or len(planned) >= LIST_CALLS_PER_ROUND:
                    break
                offset = frontier.get(segment, 0)
                if offset >= 0:
                    source, shard = divmod(segment, shards)
                    name = sources[source]
                    scan = min(LIST_SCAN, budget)
                    budget -= scan
                    calls.add(self._scripts["listing"], [getattr(self.keys, name)(shard)],
                              [offset, scan, self.keys.task_prefix(shard), state.value if state else "",
                               topic or "", 1 if name in ("done", "dead") else 0, need - known,
                               self.keys.hour_list_prefix(shard) if name == "hours" else ""])
                    planned.append((segment, scan))
                known += len(pending.get(segment, ()))
                if not fan_out:  # the first call goes to the cursor's shard alone: it usually fills the page
                    fan_out = True
                    break
            for (segment, scan), reply in zip(planned, calls.execute()):
                next_offset, inspected = int(reply[0]), int(reply[1])
                budget += scan - inspected  # what a call did not look at is not spent
                frontier[segment] = next_offset
                pending.setdefault(segment, []).extend(
                    (int(position), task_id) for position, task_id in zip(reply[2::2], reply[3::2]))
            while current < segments:
                found += [(current, position, task_id) for position, task_id in pending.pop(current, ())]
                if frontier.get(current, 0) >= 0:
                    break  # not exhausted: later segments wait for the rest of this one
                current += 1
        if len(found) > limit:  # the next page starts at the first match beyond this one
            segment, position, _ = found[limit]
            after: Cursor | None = Cursor(segment // shards, segment % shards, position)
        elif current >= segments:
            after = None
        else:  # the budget ran out: continue where the scan stopped
            after = Cursor(current // shards, current % shards, frontier.get(current, 0))
        tasks = self.get_many([task_id for _, _, task_id in found[:limit]])
        return Page(tasks, after.format() if after else None)

    @translate_errors
    def get_many(self, task_ids: t.Sequence[str]) -> list[TaskRecord]:
        """Records of several tasks in one round trip; vanished ones are left out."""
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(self.keys.task(task_id))
        return [TaskRecord.from_hash(i, h) for i, h in zip(task_ids, pipe.execute()) if h]

    @translate_errors
    def counts(self) -> dict[tuple[str, str], int]:
        """Number of tasks per (state, topic), summed over the shards."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.hgetall(self.keys.stats(shard))
        totals: dict[tuple[str, str], int] = {}
        for h in pipe.execute():
            for field, value in h.items():
                state, _, topic = field.partition("|")
                totals[(state, topic)] = totals.get((state, topic), 0) + int(value)
        return {k: v for k, v in totals.items() if v}

    @translate_errors
    def mark_notified(self, task_id: str, now_ms: int, check_only: bool = False) -> bool:
        """Whether the failure notice of ``task_id`` is still to send; without ``check_only``, mark it sent."""
        key = self.keys.task(task_id)
        if check_only:
            return not self.redis.hexists(key, "fnd")
        return bool(self.redis.hsetnx(key, "fnd", now_ms))

    @translate_errors
    def ping(self) -> bool:
        return bool(self.redis.ping())

    # -- the worker side

    @translate_errors
    def promote(self, shard: int, now_ms: int) -> list[Dispatch]:
        """Hand out the tasks of ``shard`` due within the horizon, first moving near hour lists into the timer."""
        reply = self._scripts["promote"](
            keys=[self.keys.timer(shard), self.keys.inflight(shard), self.keys.stats(shard)],
            args=[now_ms, self.horizon_ms, self.lease_ms, self.batch, self.keys.task_prefix(shard),
                  self.keys.history_prefix(shard), HISTORY_MAX, self.reach_ms, self.keys.hours(shard),
                  self.keys.hour_list_prefix(shard), HOUR_MOVE_LIMIT])
        return _dispatches(reply)

    @translate_errors
    def reclaim(self, shard: int, now_ms: int) -> list[Dispatch]:
        """Re-issue the tasks of ``shard`` whose lease ran out."""
        reply = self._scripts["reclaim"](
            keys=[self.keys.inflight(shard), self.keys.stats(shard), self.keys.dead(shard)],
            args=[now_ms, self.lease_ms, self.batch, self.keys.task_prefix(shard),
                  self.keys.history_prefix(shard), HISTORY_MAX, MAX_LOST, self.dead_retention_ms])
        return _dispatches(reply)

    @translate_errors
    def release_orphans(self, incarnation: str, now_ms: int, *, attempts: bool = True) -> int:
        """Make what a worker ``incarnation`` held due for reclaim now (see ``orphans.lua``).

        Releases the tasks whose delivery messages it held (:meth:`hold_many`)
        and, with ``attempts`` (it died), the attempts it had started; a worker
        that stops cleanly has finished those itself. One script call per
        shard, sent together; returns how many tasks were released. Safe to
        run twice or from several promoters at once.
        """
        calls = ScriptCalls(self.redis)
        for shard in range(self.keys.shards):
            calls.add(self._scripts["orphans"], [self.keys.owned(shard, incarnation),
                                                 self.keys.holding(shard, incarnation), self.keys.inflight(shard)],
                      [now_ms, incarnation, self.keys.task_prefix(shard), int(attempts)])
        return sum(int(n) for n in calls.execute())

    @translate_errors
    def hold_many(self, incarnation: str, items: t.Sequence[tuple[str, int, int]], now_ms: int) -> int:
        """Note that worker ``incarnation`` holds delivery messages of ``items`` (id, generation, due ms) not yet due.

        With the Redis broker a worker keeps ETA messages in its memory until
        they are due; noted here, they are released by :meth:`release_orphans`
        when that worker dies or stops, instead of waiting for their lease.
        One script call per shard with such tasks, sent together.
        """
        by_shard: dict[int, list[t.Any]] = {}
        for task_id, gen, due_ms in items:
            by_shard.setdefault(self.keys.shard_of(task_id), []).extend((due_ms + self.lease_ms, f"{task_id}|{gen}"))
        calls = ScriptCalls(self.redis)
        for shard, pairs in by_shard.items():
            calls.add(self._scripts["hold"], [self.keys.holding(shard, incarnation)], [now_ms, *pairs])
        return sum(int(n) for n in calls.execute()) if calls.calls else 0

    @translate_errors
    def purge(self, shard: int, now_ms: int) -> int:
        """Forget the finished tasks and dead letters of ``shard`` whose retention has passed."""
        return sum(int(self._scripts["purge"](
            keys=[zset, self.keys.stats(shard)],
            args=[now_ms, self.batch, self.keys.task_prefix(shard), self.keys.history_prefix(shard)]))
            for zset in (self.keys.done(shard), self.keys.dead(shard)))

    @translate_errors
    def claim(self, task_id: str, gen: int, now_ms: int, lease_ms: int) -> TaskRecord | None:
        """Start an attempt if this message is current; ``None`` means drop the message."""
        claimed = self.claim_many([(task_id, gen)], now_ms, lease_ms)
        return claimed[0] if claimed else None

    @translate_errors
    def claim_many(self, items: t.Sequence[tuple[str, int]], now_ms: int, lease_ms: int,
                   extra_ms: int | None = None, owner: str = "") -> list[TaskRecord]:
        """Start attempts for the current ones of ``items`` (one round trip); stale ones are left out.

        The attempt's lease is ``lease_ms``, or the task's own timeout plus ``extra_ms``.
        ``owner`` (a worker's incarnation) is recorded so that :meth:`release_orphans`
        can hand the attempts on as soon as that worker's heartbeat stops.
        """
        extra = self.lease_ms if extra_ms is None else extra_ms
        calls = ScriptCalls(self.redis)
        for task_id, gen in items:
            k = self.keys.for_task(task_id)
            keys, args = k.as_list(), [task_id, gen, now_ms, lease_ms, extra]
            if owner:
                keys.append(self.keys.owned(self.keys.shard_of(task_id), owner))
                args.append(owner)
            calls.add(self._scripts["claim"], keys, args)
        claimed = []
        for (task_id, _), reply in zip(items, calls.execute() if calls.calls else []):
            if reply[0] == "ok":
                fields = reply[1:]
                claimed.append(TaskRecord.from_hash(task_id, dict(zip(fields[::2], fields[1::2]))))
        return claimed

    @translate_errors
    def settle(self, task_id: str, gen: int, now_ms: int, outcome: Outcome, *, due_ms: int = 0,
               code: int | None = None, error: str | None = None,
               event: t.Mapping[str, t.Any] | None = None) -> bool:
        """Record one attempt's outcome (see ``settle.lua``); False if it lost the task."""
        return self.settle_many([Settlement(task_id, gen, now_ms, outcome, due_ms, code, error, event)])[0]

    @translate_errors
    def settle_many(self, settlements: t.Sequence[Settlement],
                    also: t.Callable[[ScriptCalls], None] | None = None) -> list[bool]:
        """Record several outcomes in one round trip; ``also(calls)`` may add script calls (topic controls)."""
        calls = ScriptCalls(self.redis)
        for st in settlements:
            if st.outcome in PARKED_OUTCOMES and st.due_ms <= 0:
                raise ValueError(f"a {st.outcome} settlement needs the time of the next attempt (due_ms)")
            k = self.keys.for_task(st.task_id)
            calls.add(self._scripts["settle"], k.as_list(),
                      [st.task_id, st.gen, st.now_ms, st.outcome, st.due_ms, self.retention_ms,
                       "" if st.code is None else st.code, st.error or "",
                       jsoncodec.dumps(st.event) if st.event else "", HISTORY_MAX,
                       self.dead_retention_ms, "" if st.slot_ms is None else st.slot_ms])
        if also is not None:
            also(calls)
        return [bool(r) for r in calls.execute()[:len(settlements)]] if calls.calls else []


def _dispatches(reply: list[t.Any]) -> list[Dispatch]:
    return [Dispatch(reply[i], int(reply[i + 1]), int(float(reply[i + 2])), int(reply[i + 3]), reply[i + 4])
            for i in range(0, len(reply), 5)]


def _refusal(state: State) -> str:
    if state is State.DELIVERING:
        return "the task is being delivered right now; it can no longer be deleted"
    return f"the task has already {state.value}; there is nothing left to delete"
