"""Unit tests of pure functions: judging answers, config layers, keys, the documented configuration table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from httpqueue import config
from httpqueue.delivery import http as delivery
from httpqueue.config import Settings
from httpqueue.exceptions import CallbackFailed, CallbackThrottled, ConfigError
from httpqueue.store.keys import Keys


def test_code_100_is_success() -> None:
    assert delivery.judge(200, b'{"code":100}', None, 0.01).code == 100


def test_code_100_decides_whatever_the_http_status() -> None:
    """The seed judged the body only; receivers written for it keep working."""
    assert delivery.judge(202, b'{"code": 100, "extra": 1}', None, 0.0).code == 100


@pytest.mark.parametrize("raw", [b'{"code":101}', b'{"code": 101, "msg": "slow down"}'])
def test_code_101_is_throttled_with_retry_after(raw: bytes) -> None:
    with pytest.raises(CallbackThrottled) as info:
        delivery.judge(429, raw, "7", 0.0)
    assert info.value.retry_after == 7.0


@pytest.mark.parametrize("raw, words", [
    (b'{"code":102}', "102"), (b'{"code":true}', "true"), (b'{"code":"100"}', '"100"'),
    (b"[100]", "[100]"), (b"oops", "not JSON"), (b"", "not JSON"), (b"null", "null"),
])
def test_other_answers_are_failures(raw: bytes, words: str) -> None:
    with pytest.raises(CallbackFailed) as info:
        delivery.judge(200, raw, None, 0.0)
    assert words in str(info.value)


def test_long_bodies_are_cut_in_messages() -> None:
    with pytest.raises(CallbackFailed) as info:
        delivery.judge(500, b"x" * 5000, None, 0.0)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("value, expected", [
    ("5", 5.0), (" 12 ", 12.0), ("", None), (None, None), ("soon", None), ("-3", None),
    ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 07:28:00 that day
    assert delivery.parse_retry_after(value, now=now) == expected


def test_settings_layers_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "hq.toml"
    path.write_text('retry_base = 5\naddress = ":9000"\n')
    env = {"HTTPQUEUE_CONFIG": str(path), "HTTPQUEUE_RETRY_BASE": "7"}
    s = Settings.load(environ=env)
    assert (s.retry_base, s.address, s.max_retry) == (7, ":9000", 30)
    assert Settings.load({"retry_base": 2}, environ=env).retry_base == 2


@pytest.mark.parametrize("env, words", [
    ({"HTTPQUEUE_RETRY_BASE": "ten"}, "HTTPQUEUE_RETRY_BASE"),
    ({"HTTPQUEUE_RETRY_JITTER": "maybe"}, "HTTPQUEUE_RETRY_JITTER"),
    ({"HTTPQUEUE_TIMER_HORIZON": "3600"}, "visibility_timeout"),
    ({"HTTPQUEUE_WORKER_POOL": "gevent"}, "worker_pool"),
])
def test_bad_settings_are_refused_with_a_message(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Settings.load(environ=env)


def test_tuple_settings_split_on_commas() -> None:
    s = Settings.load(environ={"HTTPQUEUE_CALLBACK_ALLOW": "127.0.0.0/8, ::1,,"})
    assert s.callback_allow == ("127.0.0.0/8", "::1")


def test_documented_configuration_table_is_current() -> None:
    page = (Path(__file__).resolve().parents[2] / config.CONFIGURATION_PAGE).read_text()
    assert config.TABLE_START in page and config.TABLE_END in page
    assert config.with_table(page) == page, "run: python -m httpqueue.config --write"


def test_keys_of_one_task_share_a_hash_tag() -> None:
    keys = Keys("hq", 16)
    k = keys.for_task("35adbde5-77c4-4d65-adac-0082d91f2554")
    tags = {key[key.index("{"):key.index("}") + 1] for key in json.loads(json.dumps(vars(k))).values()}
    assert len(tags) == 1
    assert 0 <= keys.shard_of("x") < 16


def test_the_create_keys_of_a_shard_are_its_own_keys() -> None:
    """``for_create`` remembers per shard what the key methods build, for each prefix and shard count apart."""
    for keys in (Keys("hq", 16), Keys("other", 16), Keys("hq", 4)):
        for shard in range(keys.shards):
            made = keys.for_create(shard)
            assert made == ((keys.timer(shard), keys.inflight(shard), keys.stats(shard), keys.hours(shard)),
                            keys.task_prefix(shard), keys.hour_list_prefix(shard))
            assert keys.for_create(shard) is made


def test_callback_body_passes_content_through() -> None:
    from httpqueue.states import State
    from httpqueue.store import TaskRecord

    record = TaskRecord(id="i", topic="t", callback="http://x/", content={"a": [1, "é"]}, state=State.QUEUED,
                        execute_ms=0, due_ms=0, created_ms=0, max_retry=0, has_retry=0, attempts=1, gen=1)
    assert json.loads(delivery.callback_body(record)) == {"id": "i", "topic": "t", "content": {"a": [1, "é"]}}


def test_readme_is_valid_restructuredtext() -> None:
    import io

    import docutils.core

    warnings = io.StringIO()
    docutils.core.publish_string((Path(__file__).resolve().parents[2] / "README.rst").read_text(),
                                 writer_name="null",
                                 settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": warnings})
    assert warnings.getvalue() == ""


def test_json_log_lines_carry_the_fields_shippers_index() -> None:
    import logging

    from httpqueue.logs import JsonFormatter, TextFormatter

    record = logging.LogRecord("httpqueue", logging.INFO, __file__, 1, "attempt", (), None)
    record.event = "attempt"
    record.fields = {"task_id": "abc", "topic": "order", "attempt": 2, "duration_ms": 12.5,
                     "outcome": "succeeded", "answer": '{"code":100}'}
    line = JsonFormatter().format(record)
    doc = json.loads(line)
    assert "\n" not in line
    assert {"ts", "time", "level", "event", "task_id", "topic", "attempt", "duration_ms", "outcome"} <= set(doc)
    assert doc["event"] == "attempt" and doc["level"] == "info" and doc["time"].endswith("Z")
    text = TextFormatter().format(record)
    assert 'result : order:abc => {"code":100} ,cost time 12.500ms' in text
