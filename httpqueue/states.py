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


class State(enum.StrEnum):
    """Where a task is in its life (stored as ``st`` in the task's hash)."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    DELIVERING = "delivering"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DELETED = "deleted"


#: States in which the task will still fire unless deleted.
PENDING_STATES = frozenset({State.SCHEDULED, State.QUEUED, State.RETRYING})

#: States whose tasks wait in the Redis timer (scheduled or retrying) or in a paused topic's held set.
WAITING_STATES = frozenset({State.SCHEDULED, State.RETRYING})

#: States whose tasks a worker holds (a message in the broker, or an attempt in progress), with a lease.
IN_FLIGHT_STATES = frozenset({State.QUEUED, State.DELIVERING})


class Outcome(enum.StrEnum):
    """What became of a claimed task in one delivery message.

    The first four are attempts (a callback was sent); ``deferred`` and
    ``held`` mean the task's topic turned it away before any callback
    (rate or concurrency limit, open circuit; paused topic), so no attempt is
    counted. ``settle.lua`` receives the value.
    """

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    THROTTLED = "throttled"
    FAILED = "failed"
    DEFERRED = "deferred"
    HELD = "held"


#: Outcomes of a callback that was actually sent (they count as attempts, in metrics and series).
ATTEMPTED = frozenset({Outcome.SUCCEEDED, Outcome.RETRYING, Outcome.THROTTLED, Outcome.FAILED})

#: Outcomes that park the task in the timer until a later time (the settlement's ``due_ms``).
PARKED_OUTCOMES = frozenset({Outcome.RETRYING, Outcome.THROTTLED, Outcome.DEFERRED})

#: Outcomes that are not a problem of the receiver (logged at INFO, neutral or good for the circuit breaker).
QUIET_OUTCOMES = frozenset({Outcome.SUCCEEDED, Outcome.THROTTLED})

#: Attempted outcomes in the order charts and tables show them.
ATTEMPT_ORDER = (Outcome.SUCCEEDED, Outcome.RETRYING, Outcome.THROTTLED, Outcome.FAILED)


class AdmitAction(enum.StrEnum):
    """What a topic's admission (``admit.lua``) decided for one claimed task."""

    GO = "go"        # attempt now
    HELD = "held"    # the topic is paused: wait in the held set until resumed
    WAIT = "wait"    # the concurrency limit is reached: try again after ``topic_wait``
    SLOT = "slot"    # the rate limit gave a later slot: wait until then
    OPEN = "open"    # the callback host's circuit is open: wait until the probe time
