"""etcd for what must agree on every node: topic settings, schedules, the callback allow-list, cron ticks.

Only used with ``etcd_endpoints`` set; without it httpqueue keeps all of it in
Redis and nothing here is imported. :class:`EtcdCluster` is what a process's
:class:`~httpqueue.context.Context` holds: the client, the topic and schedule
stores whose writes go to etcd (:mod:`httpqueue.etcd.stores`) and the settings
watch (:mod:`httpqueue.etcd.watch`). Redis keeps the high-volume data (tasks,
timers, counters) and a copy of the settings for the Lua scripts.

Module map: ``client`` (the JSON gateway, failover, watches), ``keys`` (every
etcd key), ``stores`` (compare-and-swap writes, tick claims), ``watch`` (the
watched copy and the outage status), ``registry`` (the node registry on leases).
"""
from __future__ import annotations

import typing as t

from httpqueue.config import Settings
from httpqueue.etcd.client import EtcdClient, EtcdUnavailable
from httpqueue.etcd.keys import EtcdKeys
from httpqueue.etcd.registry import EtcdRegistry
from httpqueue.etcd.stores import EtcdScheduleStore, EtcdTopicControls
from httpqueue.etcd.watch import AllowSetter, SettingsMirror
from httpqueue.store.tasks import TaskStore

__all__ = ["EtcdCluster", "EtcdUnavailable"]


class EtcdCluster:
    """One process's view of etcd: the stores the API writes through, and the watch that follows changes."""

    def __init__(self, settings: Settings, store: TaskStore, set_allow: AllowSetter) -> None:
        self.client = EtcdClient(settings.etcd_endpoints, settings.etcd_timeout)
        self.keys = EtcdKeys(settings.etcd_prefix)
        self.topics = EtcdTopicControls(store, settings, self.client, self.keys)
        self.schedules = EtcdScheduleStore(store, self.client, self.keys)
        self.registry = EtcdRegistry(self.client, self.keys)
        self.mirror = SettingsMirror(self.client, self.keys, self.topics, self.schedules, set_allow)

    def start(self) -> EtcdCluster:
        self.mirror.start()
        return self

    def stop(self) -> None:
        self.mirror.stop()

    def warnings(self) -> tuple[str, ...]:
        """For ``/ready`` and ``/status``: why this process runs on last-known settings, if it does."""
        warning = self.mirror.warning()
        return (warning,) if warning else ()

    def status(self) -> dict[str, t.Any]:
        return {"up": bool(self.mirror.up), "revision": self.mirror.revision}
