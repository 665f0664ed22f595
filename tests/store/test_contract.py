"""The contract between the Lua scripts and their Python callers: KEYS and ARGV as each script's header says.

Static checks read the scripts: every one documents KEYS, ARGV and its reply;
the task scripts name their keys only through ``task_keys.lua``, whose order
must be :meth:`TaskKeys.as_list`'s. Recorded calls then check what the store
really sends: the keys its :class:`Keys` builds, all in one Redis Cluster slot,
and as many ARGV as the header documents. The recorder forwards every call
to the real script on the real Redis.
"""
from __future__ import annotations

import dataclasses
import re
import typing as t
from importlib import resources

import pytest
from redis.crc import key_slot

from httpqueue.context import Context
from httpqueue.states import Outcome
from httpqueue.store import NewTask, ScriptCalls, TaskKeys, scripts
from httpqueue.store.keys import TIMER_HOUR_MS
from httpqueue.store.schedules import Schedule
from httpqueue.store.topics import TopicSettings
from tests.support.store import HOUR_MS, NOWHERE, delivering, parked, queued, settled

NOW = 1_750_000_000_000
LUA = resources.files("httpqueue.store") / "lua"
PRELUDES = {"common", "task_keys"}
SCRIPTS = sorted(p.name[:-4] for p in LUA.iterdir() if p.name.endswith(".lua") and p.name[:-4] not in PRELUDES)


def header(name: str) -> str:
    """The script's leading comment block, as one line of text."""
    lines = []
    for line in (LUA / f"{name}.lua").read_text().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return " ".join(lines)


def _names(text: str) -> list[str]:
    text = re.sub(r"\([^()]*\)", "", text)  # explanations in parentheses
    return [n.strip() for n in text.split(",") if n.strip()]


@dataclasses.dataclass(frozen=True)
class Signature:
    """What a header documents: the KEYS count and the ARGV names (fixed ones, then a repeated group)."""

    keys: int
    fixed: list[str]
    repeated: list[str]
    keys_per_item: int = 0  # "KEYS: a, b, then per task: c": one more key for each repeated ARGV group

    def accepts(self, args: t.Sequence[t.Any]) -> bool:
        if not self.repeated:
            return len(args) == len(self.fixed)
        extra = len(args) - len(self.fixed)
        return extra >= 0 and extra % len(self.repeated) == 0

    def key_count(self, args: t.Sequence[t.Any]) -> int:
        """How many KEYS a call with ``args`` must send."""
        if not self.keys_per_item:
            return self.keys
        return self.keys + self.keys_per_item * (len(args) - len(self.fixed)) // len(self.repeated)


def signature(name: str) -> Signature:
    text = header(name)
    keys_part = re.search(r"KEYS:(.*?)(?:;|ARGV:|Returns|$)", text)
    argv_part = re.search(r"ARGV:(.*?)(?:Returns|$)", text)
    assert keys_part and argv_part, f"{name}.lua does not document its KEYS and ARGV"
    keys_text = keys_part.group(1)
    per_item = 0
    if "then per" in keys_text:  # "timer, inflight, stats, then per task: task"
        keys_text, _, group = keys_text.partition("then per")
        per_item = len(_names(group.partition(":")[2]))
    keys = len(TaskKeys(*"abcdefgh").as_list()) if "TaskKeys order" in keys_text else len(_names(keys_text))
    argv = argv_part.group(1)
    if "then per" in argv:  # "..., then per task: id, host, slot"
        fixed, _, group = argv.partition("then per")
        return Signature(keys, _names(fixed), _names(group.partition(":")[2]), per_item)
    names = _names(argv)
    if names and names[-1] == "...":  # "..., field, value, ..." (pairs, possibly shown twice)
        start = names.index("field")
        return Signature(keys, names[:start], list(dict.fromkeys(names[start:-1])))
    return Signature(keys, names, [])


# -- the scripts as written -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_documents_keys_argv_and_its_reply(name: str) -> None:
    text = header(name)
    assert "KEYS:" in text and "ARGV:" in text, name
    assert "Returns" in text or "return" in (LUA / f"{name}.lua").read_text(), name
    sig = signature(name)
    assert sig.keys >= 1 and sig.fixed, sig


def test_task_keys_lua_names_the_keys_in_task_keys_order() -> None:
    text = (LUA / "task_keys.lua").read_text()
    named: dict[str, int] = {}  # K_TASK -> 1, ...
    for names, values in re.findall(r"local ([A-Z_, ]+?) = ([A-Z\[\]0-9, ]+)", text):
        for name, value in zip(names.split(","), values.split(",")):
            position = re.fullmatch(r"\s*KEYS\[(\d+)\]\s*", value)
            assert position, value
            named[name.strip()] = int(position.group(1))
    fields = [f.name for f in dataclasses.fields(TaskKeys)]
    assert sorted(named) == sorted(f"K_{f.upper()}" for f in fields)
    probe = TaskKeys(**{f: f for f in fields})
    listed = probe.as_list()
    for name, index in named.items():
        assert listed[index - 1] == name[2:].lower(), f"{name} is KEYS[{index}] but as_list() puts {listed[index - 1]}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_task_scripts_use_named_keys_and_the_others_do_not(name: str) -> None:
    body = (LUA / f"{name}.lua").read_text()
    code = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))
    if name in scripts.TASK_SCRIPTS:
        code = re.sub(r"local K_[A-Z]+ = KEYS\[(9|\d\d+)\]", "", code)  # a key past TaskKeys, named once (claim)
        assert "KEYS[" not in code, f"{name}.lua should name its keys K_TASK .. K_DEAD (task_keys.lua)"
        assert "K_TASK" in code
    else:
        assert not re.search(r"\bK_[A-Z]+\b", code), f"{name}.lua gets no task_keys.lua prelude"


def test_common_lua_names_hour_lists_by_the_hours_of_keys_py() -> None:
    """The hour in an hour list's key is computed in Lua; its length must be the one keys.py documents."""
    [hour_ms] = re.findall(r"^local HOUR_MS = (\d+)$", (LUA / "common.lua").read_text(), re.M)
    assert int(hour_ms) == TIMER_HOUR_MS


def test_the_sources_have_their_preludes() -> None:
    for name in SCRIPTS:
        text = scripts.source(name)
        assert text.startswith((LUA / "common.lua").read_text())
        assert ((LUA / "task_keys.lua").read_text() in text) == (name in scripts.TASK_SCRIPTS)


# -- the calls the store makes ---------------------------------------------------------------------------

class Recorder:
    """Wraps a registered script: records each call's KEYS and ARGV, then runs the real script."""

    def __init__(self, script: t.Any) -> None:
        self.inner = script
        self.calls: list[tuple[list[str], list[t.Any]]] = []

    def record(self, keys: t.Sequence[t.Any], args: t.Sequence[t.Any]) -> None:
        self.calls.append(([str(k) for k in keys], list(args)))

    def __call__(self, keys: t.Sequence[t.Any] = (), args: t.Sequence[t.Any] = (), client: t.Any = None) -> t.Any:
        self.record(keys, args)
        return self.inner(keys=keys, args=args, client=client)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.inner, name)


@pytest.fixture
def recorded(make_context: t.Callable[..., Context],
             monkeypatch: pytest.MonkeyPatch) -> tuple[Context, dict[str, Recorder]]:
    """A context whose every script call is recorded, direct or sent in a pipeline of several."""
    context = make_context(shards=4)
    recorders: dict[str, Recorder] = {}
    for owner in (context.store, context.topics, context.schedules):
        for name, script in list(owner._scripts.items()):
            owner._scripts[name] = recorders[name] = Recorder(script)
    context.series.script = recorders["series"] = Recorder(context.series.script)
    add = ScriptCalls.add

    def recording_add(self: ScriptCalls, script: t.Any, keys: list[t.Any], args: list[t.Any]) -> None:
        if isinstance(script, Recorder):
            script.record(keys, args)
            script = script.inner
        add(self, script, keys, args)

    monkeypatch.setattr(ScriptCalls, "add", recording_add)
    return context, recorders


def exercise(context: Context) -> None:
    """Every script, through the public methods, once or more."""
    store, topics = context.store, context.topics
    store.create_many([NewTask("b", NOWHERE, {"n": n}, NOW + (n % 2) * HOUR_MS, n % 3,
                               {"timeout": 2} if n == 1 else None, f"batch-{n}", "fp" if n == 2 else None)
                       for n in range(12)], NOW)  # a batch: several tasks per shard in one call
    store.create(NewTask("b", NOWHERE, "far", NOW + 3 * HOUR_MS, 0), NOW)  # into an hour list
    task_id = parked(store, NOW)
    store.requeue(task_id, NOW)
    for shard in range(context.keys.shards):
        store.promote(shard, NOW)
    dispatch = delivering(store, NOW, options={"timeout": 1})
    store.settle(dispatch.task_id, dispatch.gen, NOW, Outcome.SUCCEEDED, code=100, event={"event": "attempt"})
    store.delete(parked(store, NOW), NOW)
    settled(store, NOW, Outcome.FAILED)
    owned = queued(store, NOW)
    store.claim_many([(owned.task_id, owned.gen)], NOW, store.lease_ms, owner="o1")
    held = queued(store, NOW)
    store.hold_many("o1", [(held.task_id, held.gen, held.due_ms)], NOW)
    store.release_orphans("o1", NOW)
    for shard in range(context.keys.shards):
        store.reclaim(shard, NOW + HOUR_MS)
        store.purge(shard, NOW + 100 * 86_400_000)
    store.list_tasks(limit=5)
    topics.configure("t", {"rate_limit": 5, "concurrency": 2})
    record = store.get(parked(store, NOW))
    topics.admit("t", [record, record], NOW)
    topics.finish("t", [(record.id, "h:80", "fail"), (record.id, "h:80", "ok")], NOW)
    topics.pause("t")
    topics.resume("t")
    calls = ScriptCalls(store.redis)
    context.series.add(calls, 1, [(Outcome.SUCCEEDED, 4.0), (Outcome.FAILED, 10.0)], NOW)
    calls.execute()
    schedule = Schedule("s", "* * * * *", "UTC", {"topic": "t", "callback": NOWHERE})
    tick = context.schedules.save(schedule, NOW)
    context.schedules.advance(schedule, tick, "s@1", NOW)
    topics.mirror("t", TopicSettings(paused=False, rate_limit=2.0), 7)  # what an etcd watch copies (etcd mode)
    context.schedules.mirror("m", schedule.definition(), 7, NOW)
    context.schedules.mirror("m", None, 8, NOW)


def test_every_call_sends_the_documented_keys_and_argv(recorded: tuple[Context, dict[str, Recorder]]) -> None:
    context, recorders = recorded
    exercise(context)
    assert sorted(name for name, r in recorders.items() if r.calls) == SCRIPTS  # every script was called
    for name, recorder in recorders.items():
        sig = signature(name)
        for keys, args in recorder.calls:
            assert len(keys) == sig.key_count(args), (name, keys)
            assert sig.accepts(args), f"{name}: {len(args)} ARGV, documented {sig.fixed} + {sig.repeated}*n"
            assert len({key_slot(k.encode()) for k in keys}) == 1, f"{name} touches several cluster slots: {keys}"
            assert all(k.startswith(f"{context.keys.prefix}:") for k in keys), keys


def test_task_scripts_get_the_task_keys_of_the_id_they_change(recorded: tuple[Context, dict[str, Recorder]]) -> None:
    context, recorders = recorded
    exercise(context)
    for name in scripts.TASK_SCRIPTS:
        assert recorders[name].calls, name
        for keys, args in recorders[name].calls:
            task_keys = context.keys.for_task(args[0]).as_list()
            assert keys[:len(task_keys)] == task_keys, name
            if len(keys) > len(task_keys):  # claim with an owner: its owned set of the task's shard
                assert keys[len(task_keys):] == [context.keys.owned(context.keys.shard_of(args[0]), args[5])], name


def test_create_gets_its_shard_keys_then_each_task_of_that_shard(
        recorded: tuple[Context, dict[str, Recorder]]) -> None:
    context, recorders = recorded
    exercise(context)
    k = context.keys
    assert any(len(keys) > 4 for keys, _ in recorders["create"].calls)  # a call carried several tasks
    for keys, args in recorders["create"].calls:
        ids = args[5::9]
        [shard] = {k.shard_of(task_id) for task_id in ids}
        assert keys == [k.timer(shard), k.inflight(shard), k.stats(shard), k.hours(shard), *(k.task(i) for i in ids)]
        assert args[4] == k.hour_list_prefix(shard)


def test_shard_scripts_get_the_keys_of_one_shard(recorded: tuple[Context, dict[str, Recorder]]) -> None:
    context, recorders = recorded
    exercise(context)
    k = context.keys
    expected = {
        "promote": lambda s: [[k.timer(s), k.inflight(s), k.stats(s)]],
        "reclaim": lambda s: [[k.inflight(s), k.stats(s), k.dead(s)]],
        "purge": lambda s: [[k.done(s), k.stats(s)], [k.dead(s), k.stats(s)]],
        "unhold": lambda s: [[k.held(s), k.timer(s)]],
        "orphans": lambda s: [[k.owned(s, "o1"), k.holding(s, "o1"), k.inflight(s)]],
    }
    prefix_at = {"promote": 4, "reclaim": 3, "purge": 2, "unhold": 1, "orphans": 2}  # ARGV index of task_prefix
    for name, keys_of in expected.items():
        assert recorders[name].calls, name
        for keys, args in recorders[name].calls:
            [shard] = [s for s in range(k.shards) if keys in keys_of(s)]
            assert args[prefix_at[name]] == k.task_prefix(shard), name  # the tasks of that same shard
            if name == "promote":  # and the hour lists of that same shard
                assert args[8:10] == [k.hours(shard), k.hour_list_prefix(shard)]
    topic_keys = k.for_topic("t")
    assert {tuple(keys) for keys, _ in recorders["admit"].calls} == {
        (topic_keys.config, topic_keys.running, topic_keys.rate, topic_keys.breaker)}
    assert {tuple(keys) for keys, _ in recorders["finish"].calls} == {
        (topic_keys.running, topic_keys.breaker, topic_keys.config)}
    assert {tuple(keys) for keys, _ in recorders["advance"].calls} == {(k.schedule_next(),)}
    [(hold_keys, hold_args)] = recorders["hold"].calls
    [held] = [entry.split("|")[0] for entry in hold_args[2::2]]
    assert hold_keys == [k.holding(k.shard_of(held), "o1")]
    assert {tuple(keys) for keys, _ in recorders["series"].calls} == {(k.series(1, NOW // 60_000),)}
