"""``Client.export_status()``, its async twin and ``httpqueue export-status`` against a real API, with a consumer
group of a real reader on the suite's Redis (removed afterwards)."""
from __future__ import annotations

import asyncio
import json
import typing as t
import uuid

import pytest
import redis
from click.testing import CliRunner

from httpqueue.cli import main
from httpqueue.client import AsyncClient, Client, ExportStatus
from httpqueue.config import Settings
from httpqueue.export.stream import GroupReader
from httpqueue.store.keys import Keys
from tests.client.conftest import TOKEN, Api


@pytest.fixture
def sink(rclient: redis.Redis, settings: Settings) -> t.Iterator[str]:
    """A sink whose group has read 2 of 5 entries on shard 0 and acknowledged 1; its label."""
    keys = Keys(settings.key_prefix, settings.shards)
    label = f"memory-{uuid.uuid4().hex[:8]}"
    reader = GroupReader(rclient, keys, f"export:{label}", "client-test")
    reader.ensure_groups()
    added = [rclient.xadd(keys.events(0), {"k": "created", "id": f"task-{n}", "t": 1, "n": 0}) for n in range(2)]
    reader.ack(reader.read_new(8)[:1])
    added += [rclient.xadd(keys.events(0), {"k": "created", "id": f"task-{n}", "t": 1, "n": 0}) for n in range(3)]
    yield label
    for shard in range(keys.shards):
        rclient.xgroup_destroy(keys.events(shard), reader.group)
        if shard == 0:
            rclient.xdel(keys.events(0), *added)
        if not rclient.xlen(keys.events(shard)) and not rclient.xinfo_groups(keys.events(shard)):
            rclient.delete(keys.events(shard))


def mine(found: ExportStatus, label: str) -> t.Any:
    return next(s for s in found.sinks if s.sink == label)


def test_both_clients_and_the_command_show_the_sink(client_api: Api, sink: str) -> None:
    with Client(client_api.url, token=TOKEN, environ={}) as hq:
        found = mine(hq.export_status(), sink)
    assert (found.lag, found.pending, found.dropped) == (3, 1, 0)
    assert found.group == f"export:{sink}" and [c.name for c in found.consumers] == ["client-test"]
    assert found.last_delivered_at is not None and found.last_delivered_age is not None
    assert found.last_success_at is not None and found.last_success_age is not None

    async def asynchronous() -> ExportStatus:
        async with AsyncClient(client_api.url, token=TOKEN, environ={}) as hq:
            return await hq.export_status()
    again = mine(asyncio.run(asynchronous()), sink)
    assert (again.lag, again.pending, again.dropped, again.last_delivered_id) == (3, 1, 0, found.last_delivered_id)

    env = {"HTTPQUEUE_URL": client_api.url, "HTTPQUEUE_TOKEN": TOKEN}
    table = CliRunner().invoke(main, ["export-status"], env=env)
    assert table.exit_code == 0, table.output
    assert table.stdout.startswith("event export is ")
    row = next(line.split() for line in table.stdout.splitlines() if line.startswith(sink))
    assert row[1:4] == ["3", "1", "0"] and row[-1] == "client-test"
    as_json = CliRunner().invoke(main, ["export-status", "--json"], env=env)
    listed = next(s for s in json.loads(as_json.stdout)["sinks"] if s["sink"] == sink)
    assert (listed["lag"], listed["pending"], listed["dropped"]) == (3, 1, 0)
