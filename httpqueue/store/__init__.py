"""Everything httpqueue keeps in Redis, and nothing else.

* :mod:`~httpqueue.store.keys`: every Redis key, built in one place;
* :mod:`~httpqueue.store.records`: what goes in and comes out (dataclasses);
* :mod:`~httpqueue.store.scripts`: the Lua scripts (``lua/``), one round trip, errors as 503s;
* :mod:`~httpqueue.store.tasks`: the task store (tasks, timer, leases);
* :mod:`~httpqueue.store.topics`: topic controls (pause, limits, circuit breakers, dead letters);
* :mod:`~httpqueue.store.schedules`: recurring schedules;
* :mod:`~httpqueue.store.series`: per-minute delivery statistics.

The store imports neither the HTTP API nor the worker: they use it.
"""
from httpqueue.store.keys import Keys, TaskKeys, TopicKeys
from httpqueue.store.records import (
    Changed, Created, Cursor, Dispatch, NewTask, Page, Settlement, TaskRecord, new_id,
)
from httpqueue.store.scripts import ScriptCalls, translate_errors
from httpqueue.store.tasks import TaskStore

__all__ = [
    "Changed", "Created", "Cursor", "Dispatch", "Keys", "NewTask", "Page", "ScriptCalls", "Settlement",
    "TaskKeys", "TaskRecord", "TaskStore", "TopicKeys", "new_id", "translate_errors",
]
