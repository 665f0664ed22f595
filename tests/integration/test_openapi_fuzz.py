"""Property-based run of every operation in ``/openapi.json`` (schemathesis, in-process over WSGI).

The OpenAPI document is the contract; schemathesis reads it and sends each
operation both conforming (positive) and deliberately broken (negative)
requests: wrong types, missing fields, odd strings and numbers. Whatever it
sends, the answer must not be a 5xx: a bad request is the client's fault and
gets a 4xx that says so.

It runs on the test app (``app`` fixture: the suite's Redis, callbacks to
127.0.0.1 allowed), in-process, with a small example budget per operation and
mode so the whole run stays within about a minute on two cores. URLs (the
document's ``format: url``) are drawn from loopback ones, so positive creates
pass the SSRF guard and reach the store instead of all stopping at a 400.
What the run creates (tasks, schedules, topic settings, paused topics) is
undone when it ends, so the rest of the suite does not meet it.

schemathesis' own pytest integration (``schemathesis.pytest.from_fixture``)
renames pytest nodes through ``Node._nodeid``, which pytest 9.2 no longer
has; the operations are therefore driven through the documented programmatic
API (``APIOperation.as_strategy`` with Hypothesis' ``@given``), and every
failing operation is reported at the end, not only the first.
"""
from __future__ import annotations

import typing as t

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.formats import unregister_string_format

EXAMPLES_PER_OPERATION = 25
"""Hypothesis examples per operation and mode: enough to reach each field's odd values, few enough for CI."""

FUZZ = settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                database=None)
"""No deadline (two shared cores are slow at times) and no example database (runs stay independent)."""

CREATES = {"/create", "/v1/tasks", "/v1/tasks/batch"}

urls = st.one_of(
    st.builds("http://127.0.0.1:{}/{}".format, st.integers(1, 65535), st.text("abc/-_.~%", max_size=12)),
    st.builds("https://[::1]:{}/".format, st.integers(1, 65535)),
    st.sampled_from(["http://10.0.0.1/", "http://169.254.169.254/latest", "ftp://127.0.0.1/", "http://127.0.0.1:0/",
                     "http://[::1/", "http://user:pw@127.0.0.1:9/", "http://127.0.0.1:9/#frag"]),
)
"""Loopback callbacks the test app allows, and a few that the SSRF guard or the URL check must refuse (400)."""


class Created:
    """What a run stored, so it can be undone: topics with tasks or settings, paused topics, schedules."""

    def __init__(self) -> None:
        self.topics: set[str] = set()
        self.paused: set[str] = set()
        self.schedules: set[str] = set()

    def note(self, case: t.Any, response: t.Any) -> None:
        if not 200 <= response.status_code < 300:
            return
        path, body = case.operation.path, case.body if isinstance(case.body, dict) else {}
        topic = (case.path_parameters or {}).get("topic")
        if path in CREATES:
            tasks = body.get("tasks") if path.endswith("batch") else [body]
            self.topics.update(str(task["topic"]) for task in tasks or [] if isinstance(task, dict)
                               and isinstance(task.get("topic"), str))
        elif path == "/v1/schedules" and case.method == "POST":
            self.schedules.add(response.json()["id"])
        elif topic is not None:
            self.topics.add(topic)
            if path.endswith("/pause"):
                self.paused.add(topic)

    def undo(self, client: t.Any) -> None:
        for schedule in self.schedules:
            client.delete(f"/v1/schedules/{schedule}")
        for topic in self.paused:
            client.post(f"/v1/topics/{topic}/resume")
        for topic in self.topics:
            client.patch(f"/v1/topics/{topic}", json={"rate_limit": None, "concurrency": None,
                                                      "failure_callback": None})
            client.post(f"/v1/topics/{topic}/purge")


@pytest.fixture(scope="module")
def api_schema(app: t.Any) -> t.Iterator[t.Any]:
    """The app's own OpenAPI document, loaded over WSGI so every case is served in-process by ``app``."""
    schemathesis.openapi.format("url", urls)
    try:
        yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    finally:
        unregister_string_format("url")


def with_a_time(case: t.Any, delay: float) -> t.Any:
    """A positive create case given a ``delay`` when it has neither ``delay`` nor ``execute_at``.

    The document cannot say "one of the two is required" (apispec has no
    place for it), so without this nearly every positive create stops at that
    400 and the store path is never reached.
    """
    if isinstance(case.body, dict) and "delay" not in case.body and "execute_at" not in case.body:
        case.body["delay"] = delay
    return case


def exercise(operation: t.Any, mode: GenerationMode, created: Created) -> None:
    """Send ``operation`` its generated cases of ``mode``; raise on the first (shrunk) answer that is a 5xx.

    A 5xx the operation documents other than 500 is its answer, not a fault:
    ``/ready`` says 503 while no worker runs, as it should in this test.
    """
    documented = {int(code) for code in operation.definition.raw.get("responses", {}) if str(code).isdigit()}

    cases = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE and operation.path in CREATES - {"/v1/tasks/batch"}:
        cases = st.builds(with_a_time, cases, st.floats(0, 7 * 86400) | st.integers(0, 366 * 86400))

    @FUZZ
    @given(case=cases)
    def run(case: t.Any) -> None:
        response = case.call()
        created.note(case, response)
        if response.status_code != 500 and response.status_code in documented:
            return
        case.validate_response(response, checks=[not_a_server_error])

    run()


def test_no_operation_answers_a_server_error(api_schema: t.Any, app: t.Any) -> None:
    """No generated request, valid or not, to any documented operation gets a 5xx."""
    failures: list[str] = []
    labels: list[str] = []
    created = Created()
    try:
        for result in api_schema.get_all_operations():
            operation = result.ok()  # an operation the document cannot describe is itself a failure
            labels.append(operation.label)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    exercise(operation, mode, created)
                except Unsatisfiable:
                    pass  # nothing to break: no body, query or header (a path parameter is any string)
                except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect all, then report
                    # (schemathesis' FailureGroup is a BaseExceptionGroup)
                    failures.append(f"{operation.label} ({mode.value}): {exc}")
    finally:
        created.undo(app.test_client())
    assert len(labels) >= 20, labels  # the document lists every route; an empty walk would prove nothing
    assert not failures, "\n\n".join(failures)
