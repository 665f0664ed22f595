"""Task states, and the groups of them that code asks about.

A task moves::

    scheduled ──promote──> queued ──claim──> delivering ──> succeeded
        ^                                         │
        └────────── retrying <──── failed attempt ┘──> failed (retries exhausted)

    scheduled / queued / retrying ──delete──> deleted

``scheduled`` and ``retrying`` tasks wait in the Redis timer; ``queued`` ones
have an ETA message in the broker; ``delivering`` ones are being POSTed now.
"""
from __future__ import annotations

import enum


class State(str, enum.Enum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    DELIVERING = "delivering"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value


#: States from which nothing happens any more; such tasks expire after the retention time.
FINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.DELETED})

#: States in which the task will still fire unless deleted.
PENDING_STATES = frozenset({State.SCHEDULED, State.QUEUED, State.RETRYING})

#: States a delete may cancel.
DELETABLE_STATES = PENDING_STATES

ALL_STATES = tuple(State)
