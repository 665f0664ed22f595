"""Each node's watched copy of the cluster-wide settings, mirrored into Redis for the Lua scripts.

etcd is the source of truth for topic settings, schedule definitions and the
callback allow-list. Every process watches the settings subtree and applies
each change within milliseconds: topic settings and schedules are copied into
the Redis keys that ``admit.lua`` and the schedule ticker already read (writes
guarded by the etcd revision, so any number of nodes may copy the same events
in any order), the allow-list replaces the process's callback policy.

When etcd is unreachable or has lost quorum, nothing on the delivery path
notices: Redis still holds the last-known settings and this process keeps its
allow-list. The watch is opened again from the last revision it applied (etcd
replays what was missed), or, when etcd compacted that revision away, every
setting is read again. While it is down, ``httpqueue_etcd_up`` is 0, a warning
is logged once and ``/ready`` carries it as a warning (not a problem: tasks are
still created and delivered).
"""
from __future__ import annotations

import functools
import json
import logging
import threading
import time
import typing as t

from httpqueue.etcd.client import Compacted, EtcdClient, EtcdUnavailable, KeyValue, WatchBroken
from httpqueue.etcd.keys import EtcdKeys, Kind
from httpqueue.exceptions import StoreUnavailable
from httpqueue.store.schedules import ScheduleStore
from httpqueue.store.topics import TopicControls, TopicSettings

log = logging.getLogger("httpqueue.etcd")



@functools.cache
def etcd_up() -> t.Any:
    """The ``httpqueue_etcd_up`` gauge, made on first use.

    Not at import: prometheus_client chooses where values live (this process,
    or the multiprocess directory) when it is first imported, and the CLI
    imports this module before it has chosen the directory.
    """
    from prometheus_client import Gauge

    return Gauge("httpqueue_etcd_up", "1 while this process follows the cluster-wide settings in etcd; 0 while "
                 "etcd is unreachable and it runs on the last-known ones.", multiprocess_mode="livemin")

RETRY_PAUSE = 0.5
"""Seconds between two tries to reach etcd (or Redis, to copy a change) again."""

AllowSetter = t.Callable[[t.Optional[tuple[str, ...]]], None]
"""Replaces the process's callback allow-list (None: back to the node's own ``callback_allow``)."""


class SettingsMirror:
    """The settings watch of one process: a thread that applies every change under ``settings/``."""

    def __init__(self, client: EtcdClient, keys: EtcdKeys, topics: TopicControls, schedules: ScheduleStore,
                 set_allow: AllowSetter, clock: t.Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.client = client
        self.keys = keys
        self.topics = topics
        self.schedules = schedules
        self.set_allow = set_allow
        self.clock = clock
        self.revision = 0
        """The etcd revision up to which every change was applied (0: nothing read yet)."""
        self.up: bool | None = None
        self.down_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- applying changes

    def apply(self, kv: KeyValue) -> None:
        """Apply one key as etcd holds it (``value`` None: deleted)."""
        parsed = self.keys.parse(kv.key)
        if parsed is None:
            return
        kind, name = parsed
        if kind is Kind.TOPIC:
            settings = TopicSettings.from_json(kv.value) if kv.value else TopicSettings()
            self.topics.mirror(name, settings, kv.mod_revision)
        elif kind is Kind.SCHEDULE:
            self.schedules.mirror(name, json.loads(kv.value) if kv.value else None, kv.mod_revision, self.clock())
        else:
            self.set_allow(tuple(json.loads(kv.value)) if kv.value else None)

    def sync(self) -> None:
        """Read every setting and apply it (at start, and when the watch's revision was compacted)."""
        items, revision = self.client.get_prefix(self.keys.settings)
        for kv in items:
            self.apply(kv)
        present = {kv.key for kv in items}
        for schedule_id in self.schedules.mirrored():
            if self.keys.schedule(schedule_id) not in present:
                self.schedules.mirror(schedule_id, None, revision, self.clock())
        if self.keys.callback_allow() not in present:
            self.set_allow(None)
        self.revision = revision
        self._mark(True)

    # -- the thread

    def follow(self, stop: threading.Event) -> None:
        """Until ``stop``: keep a watch open from the last applied revision and apply what it says."""
        while not stop.is_set():
            try:
                if not self.revision:
                    self.sync()
                for _, changes in self.client.watch(self.keys.settings, self.revision + 1, stop):
                    if stop.is_set():
                        return
                    self._mark(True)
                    for kv in changes:
                        self.apply(kv)
                        self.revision = max(self.revision, kv.mod_revision)
            except Compacted:
                self.revision = 0  # read everything again
            except WatchBroken:
                continue  # its member died: open it again elsewhere, from the same revision
            except EtcdUnavailable as exc:
                self._mark(False, str(exc))
                stop.wait(RETRY_PAUSE)
            except StoreUnavailable as exc:  # Redis away: the change is applied again when the watch reopens
                log.warning("could not copy a setting from etcd into Redis: %s", exc)
                stop.wait(RETRY_PAUSE)

    def start(self) -> SettingsMirror:
        """Read the settings once (when etcd answers), then follow changes in a daemon thread."""
        try:
            self.sync()
        except EtcdUnavailable as exc:
            self._mark(False, str(exc))
        except StoreUnavailable as exc:
            log.warning("could not copy the settings from etcd into Redis: %s", exc)
        self._thread = threading.Thread(target=self.follow, args=(self._stop,), name="httpqueue-etcd-watch",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop applying changes at once; the daemon thread ends with its watch's next message or timeout.

        Not joined: a watch blocks in a read that neither closing the client nor
        the stop flag interrupts, and nothing is applied after the flag is set.
        """
        self._stop.set()

    # -- status

    def _mark(self, up: bool, error: str = "") -> None:
        if up == self.up:
            return
        self.up = up
        etcd_up().set(1 if up else 0)
        if up:
            if self.down_since is not None:
                log.warning("etcd reachable again after %.1f s: following its settings", time.time() - self.down_since)
            self.down_since = None
        else:
            self.down_since = time.time()
            log.warning("etcd unreachable (%s): running on the last-known settings; changes to topics, schedules "
                        "and the allow-list are refused until it returns", error[:300])

    def warning(self) -> str | None:
        """What ``/ready`` says while etcd is unreachable; None while it is followed."""
        if self.up is not False or self.down_since is None:
            return None
        return (f"etcd unreachable for {time.time() - self.down_since:.0f} s: running on the last-known topic "
                f"settings, schedules and allow-list; changes to them are refused (503) until it returns")
