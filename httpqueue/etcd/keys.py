"""Every etcd key httpqueue uses, built in this one place from the ``etcd_prefix`` setting.

Two subtrees, so that each node's settings watch sees only settings:

* ``<prefix>settings/`` (watched by every node): ``topics/<topic>`` (a
  :class:`~httpqueue.store.topics.TopicSettings` JSON document),
  ``schedules/<id>`` (a schedule's definition, JSON) and ``callback_allow``
  (a JSON list of hosts and networks);
* ``<prefix>run/`` (never watched): ``ticks/<schedule>@<tick ms>`` (which node
  fires a cron tick; on a lease) and ``nodes/<role>/<incarnation>`` (the node
  registry; on each node's lease).
"""
from __future__ import annotations

import dataclasses
import enum


class Kind(enum.Enum):
    """What a key under the settings subtree holds."""

    TOPIC = "topics/"
    SCHEDULE = "schedules/"
    CALLBACK_ALLOW = "callback_allow"


@dataclasses.dataclass(frozen=True)
class EtcdKeys:
    prefix: str = "/httpqueue/"

    @property
    def settings(self) -> str:
        """The subtree every node watches."""
        return f"{self.prefix}settings/"

    def topic(self, topic: str) -> str:
        return f"{self.settings}{Kind.TOPIC.value}{topic}"

    def schedule(self, schedule_id: str) -> str:
        return f"{self.settings}{Kind.SCHEDULE.value}{schedule_id}"

    def callback_allow(self) -> str:
        return f"{self.settings}{Kind.CALLBACK_ALLOW.value}"

    def tick(self, schedule_id: str, tick_ms: int) -> str:
        """Created by the one node that fires this tick (create-if-absent), on a lease that outlives the tick."""
        return f"{self.prefix}run/ticks/{schedule_id}@{tick_ms}"

    def nodes(self, role: str = "") -> str:
        return f"{self.prefix}run/nodes/{role + '/' if role else ''}"

    def node(self, role: str, incarnation: str) -> str:
        """A live node's description, on its lease: it vanishes when the node stops beating."""
        return f"{self.nodes(role)}{incarnation}"

    def known(self, role: str, incarnation: str = "") -> str:
        """A node that registered, without a lease: when its ``node`` key is gone it has departed."""
        return f"{self.prefix}run/known/{role}/{incarnation}"

    def parse(self, key: str) -> tuple[Kind, str] | None:
        """Which setting a watched key is, and its name (topic or schedule id); None for anything else."""
        if not key.startswith(self.settings):
            return None
        rest = key[len(self.settings):]
        for kind in Kind:
            if kind is Kind.CALLBACK_ALLOW and rest == kind.value:
                return kind, ""
            if kind is not Kind.CALLBACK_ALLOW and rest.startswith(kind.value) and len(rest) > len(kind.value):
                return kind, rest[len(kind.value):]
        return None
