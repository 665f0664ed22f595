"""Property-based fuzzing of the API: no input gives a 500, a traceback or a half-stored task."""
from __future__ import annotations

import json
import typing as t

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from httpqueue.config import Settings
from httpqueue.store.keys import Keys

FUZZ = hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

FIELDS = ["topic", "delay", "retry", "callback", "content", "execute_at", "id", "options", "tasks", "x"]
create_like = st.dictionaries(st.sampled_from(FIELDS), json_values | st.sampled_from(
    ["http://127.0.0.1:9/", "http://10.0.0.1/", "t", 1, 0.5, -1, 1e308, "2026-01-01T00:00:00Z"]), max_size=7)
bodies = st.one_of(create_like.map(json.dumps), json_values.map(json.dumps), st.binary(max_size=64).map(
    lambda b: b.decode("latin-1")))

PATHS = ["/create", "/delete", "/query", "/v1/tasks", "/v1/tasks/batch", "/v1/topics/fuzz", "/v1/topics/fuzz/pause",
         "/v1/topics/fuzz/dead-letters/replay", "/v1/tasks/abc/retry"]


def stored(rclient: t.Any, keys: Keys, topic: str) -> int:
    """Tasks of ``topic`` in any state, from the statistics hashes of every shard."""
    return sum(int(v) for shard in range(keys.shards) for f, v in rclient.hgetall(keys.stats(shard)).items()
               if f.endswith(f"|{topic}"))


def check(response: t.Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    body = response.get_json(silent=True)
    assert isinstance(body, dict), response.get_data(as_text=True)
    if response.status_code >= 400:
        assert body["code"] == response.status_code and body["error"]
        assert "Traceback" not in response.get_data(as_text=True)


@FUZZ
@given(path=st.sampled_from(PATHS), method=st.sampled_from(["POST", "PATCH", "GET", "DELETE", "PUT"]), body=bodies)
def test_no_input_gives_a_server_error(client: t.Any, path: str, method: str, body: str) -> None:
    check(client.open(path, method=method, data=body, content_type="application/json"))


@FUZZ
@given(task=create_like)
def test_a_rejected_create_stores_nothing(client: t.Any, rclient: t.Any, settings: Settings,
                                         task: dict[str, t.Any]) -> None:
    topic, keys = "fuzz-rejected", Keys(settings.key_prefix, settings.shards)
    task = {**task, "topic": topic} if "topic" in task else task
    before = stored(rclient, keys, topic)
    response = client.post("/create", json=task)
    check(response)
    if response.status_code != 200:
        assert stored(rclient, keys, topic) == before
    else:  # a valid create that hypothesis found: it must be queryable
        assert client.post("/query", json=response.get_json()).status_code == 200
        client.post("/delete", json=response.get_json())


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["state", "topic", "cursor", "limit", "x"]),
                             st.text(max_size=12), max_size=4))
def test_listing_arguments(client: t.Any, query: dict[str, str]) -> None:
    check(client.get("/v1/tasks", query_string=query))
