"""Every operation of the OpenAPI document has a client method, and every mapped method an operation."""
from __future__ import annotations

import inspect
import typing as t

from httpqueue.client import OPERATIONS, AsyncClient, Client

HELPERS = frozenset({"create_task", "iter_tasks", "iter_dead_letters", "close"})
"""Public client methods that are not one operation each (they call one, or none)."""

def operations(app: t.Any) -> set[tuple[str, str]]:
    spec = app.test_client().get("/openapi.json").get_json()
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete")}


def test_every_operation_has_a_client_method(app: t.Any) -> None:
    served = operations(app)
    assert len(served) > 25
    assert sorted(served - set(OPERATIONS)) == []
    assert sorted(set(OPERATIONS) - served) == []


def test_every_mapped_name_is_a_method_of_both_clients_and_nothing_else_is_public() -> None:
    for name in OPERATIONS.values():
        assert callable(getattr(Client, name)), name
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
    for cls in (Client, AsyncClient):
        public = {n for n, _ in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}
        assert public == set(OPERATIONS.values()) | HELPERS, cls


def test_both_clients_take_the_same_arguments() -> None:
    for name in set(OPERATIONS.values()) | HELPERS:
        assert inspect.signature(getattr(Client, name)).parameters.keys() == \
            inspect.signature(getattr(AsyncClient, name)).parameters.keys(), name
