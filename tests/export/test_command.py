"""``httpqueue export``'s own decisions: turning event writing off, refusing to run without a usable sink."""
from __future__ import annotations

import pytest

from httpqueue.config import Settings
from httpqueue.connections import StoreClient
from httpqueue.embedded import EmbeddedRedis
from httpqueue.export import command, switch
from httpqueue.export.sinks import SinkError, from_url, split_options
from httpqueue.store.keys import Keys


def settings_for(redis_server: EmbeddedRedis, keys: Keys, **overrides: object) -> Settings:
    return Settings.load({"redis_url": redis_server.url, "key_prefix": keys.prefix, "shards": keys.shards,
                          **overrides}, environ={})


def test_off_turns_event_writing_off(redis_server: EmbeddedRedis, rclient_store: StoreClient, keys: Keys) -> None:
    switch.enable(rclient_store, keys, 1000)
    assert command.run(settings_for(redis_server, keys), off=True) == 0
    assert switch.bounds(rclient_store, keys) == [0] * keys.shards


@pytest.mark.parametrize("sinks", [(), ("kafka://127.0.0.1:9092",)])
def test_no_usable_sink_is_an_error(redis_server: EmbeddedRedis, keys: Keys, sinks: tuple[str, ...]) -> None:
    assert command.run(settings_for(redis_server, keys, export_sinks=sinks)) == 2


def test_sink_urls_keep_their_own_options_and_give_httpqueue_its_own() -> None:
    url, ours = split_options("clickhouse://u:p@db:9000/analytics?table=ev&retention_days=7&compression=lz4",
                              ("table", "retention_days"))
    assert url == "clickhouse://u:p@db:9000/analytics?compression=lz4"
    assert ours == {"table": "ev", "retention_days": "7"}
    with pytest.raises(SinkError):
        from_url("ftp://example")
    sink = from_url("clickhouse://u:secret@db:9000/analytics?table=ev")
    assert sink.label == "clickhouse:db:9000/analytics/ev"  # no credentials in group names or metrics
