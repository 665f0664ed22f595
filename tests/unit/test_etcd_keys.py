"""etcd key names and the topic settings document (pure; no etcd needed)."""
from __future__ import annotations

from httpqueue.etcd.client import prefix_end
from httpqueue.etcd.keys import EtcdKeys, Kind
from httpqueue.store.topics import TopicSettings


def test_watched_keys_are_told_apart_and_others_ignored() -> None:
    keys = EtcdKeys("/hq/")
    assert keys.parse(keys.topic("a/b c")) == (Kind.TOPIC, "a/b c")  # any printable topic name
    assert keys.parse(keys.schedule("nightly")) == (Kind.SCHEDULE, "nightly")
    assert keys.parse(keys.callback_allow()) == (Kind.CALLBACK_ALLOW, "")
    assert keys.parse(keys.tick("nightly", 5)) is None
    assert keys.parse("/hq/settings/topics/") is None
    assert keys.parse("/other/settings/topics/a") is None


def test_prefix_end_covers_exactly_the_prefix() -> None:
    assert prefix_end("/hq/") == "L2hxMA=="  # base64 of "/hq0": '/' + 1


def test_topic_settings_round_trip_and_ignore_fields_of_newer_versions() -> None:
    settings = TopicSettings(paused=True, rate_limit=2.5, breaker_cooldown=1.5)
    assert TopicSettings.from_json(settings.to_json()) == settings
    assert TopicSettings.from_json('{"paused": true, "from_the_future": 1}') == TopicSettings(paused=True)
    assert settings.hash_fields() == ["1", "2.5", "", "", "", "1500"]
