"""The answers sent without their schema's dump (:func:`httpqueue.api.base.answer`) are already in its shape.

``/create`` and ``POST /v1/tasks`` answer documents built in
:mod:`httpqueue.api.documents` directly; the OpenAPI document still describes
them by ``CreatedSchema`` and ``TaskSchema``. Dumping a document through its
schema must give it back unchanged, or the answer and its description differ.
"""
from __future__ import annotations

import pytest

from httpqueue.api.documents import task_document
from httpqueue.api.schemas import CreatedSchema, TaskSchema
from httpqueue.states import State
from httpqueue.store.records import TaskRecord

RECORDS = [
    TaskRecord(id="a1", topic="", callback="http://127.0.0.1:9/cb", content={"n": 1}, state=State.SCHEDULED,
               execute_ms=1_700_000_000_123, due_ms=1_700_000_000_123, created_ms=1_699_999_999_000, max_retry=0,
               has_retry=0, attempts=0, gen=0),
    TaskRecord(id="b2", topic="billing", callback="https://user:secret@example.test/hook", content=["x", None, 2.5],
               state=State.FAILED, execute_ms=1_700_000_000_000, due_ms=1_700_000_050_000,
               created_ms=1_699_999_000_000, max_retry=3, has_retry=3, attempts=4, gen=5, throttles=2,
               last_error="connection refused", last_code=503, finished_ms=1_700_000_060_000,
               options={"timeout": 5.0, "failure_callback": "https://u:p@example.test/failed", "backoff": "fixed"}),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.id)
def test_task_document_is_its_schemas_dump(record: TaskRecord) -> None:
    document = task_document(record)
    assert TaskSchema().dump(document) == document
    replayed = {**document, "replayed": True}
    assert TaskSchema().dump(replayed) == replayed


@pytest.mark.parametrize("document", [{"id": "a1"}, {"id": "a1", "replayed": True}])
def test_created_document_is_its_schemas_dump(document: dict[str, object]) -> None:
    assert CreatedSchema().dump(document) == document
