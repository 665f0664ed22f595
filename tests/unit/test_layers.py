"""The package's layers, checked from the source: lower layers never import upper ones.

Every module under ``httpqueue/`` is parsed with :mod:`ast` (nothing is
imported), and every import is collected, including those inside functions
and ``if TYPE_CHECKING`` blocks, relative ones resolved:

* ``httpqueue/store/`` and ``httpqueue/delivery/`` import neither the HTTP API,
  the worker, the task service nor the Celery app;
* ``httpqueue/config.py`` imports nothing of httpqueue (everything may depend on it);
* ``httpqueue/services.py`` and ``httpqueue/publish.py`` import neither the API nor the worker;
* ``httpqueue/client/`` and ``httpqueue/receiver/`` are for other programs: they import none of the
  server (API, store, worker, delivery, services, Celery, the process context).
"""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import httpqueue

ROOT = Path(httpqueue.__file__).resolve().parent
PACKAGE = "httpqueue"

API_AND_WORKER = ("httpqueue.api", "httpqueue.worker")
UPPER = (*API_AND_WORKER, "httpqueue.services", "httpqueue.celery", "httpqueue.app")
"""What store and delivery must not import (``httpqueue.app`` is the Celery app, by ``httpqueue.__getattr__``)."""


@dataclasses.dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted and absolute
    line: int

    def __str__(self) -> str:
        return f"{self.module} imports {self.target} (line {self.line})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (the text of ``module``), anywhere in it.

    ``from a import b`` counts as importing ``a`` and ``a.b`` (``b`` may be a
    submodule); relative imports are resolved against ``module``'s package.
    """
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from the module's package, then up one more per extra dot
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.append(Import(module, origin, node.lineno))
            found += [Import(module, f"{origin}.{alias.name}", node.lineno) for alias in node.names
                      if alias.name != "*"]
    return found


def imports_of(path: Path) -> list[Import]:
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def modules(*relative: str) -> list[Path]:
    """The Python files at or under ``relative`` paths of the package."""
    paths: list[Path] = []
    for rel in relative:
        target = ROOT / rel
        paths += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert paths and all(p.exists() for p in paths), relative
    return paths


def within(target: str, packages: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in packages)


def breaks(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [str(i) for path in paths for i in imports_of(path) if within(i.target, forbidden)]


def test_every_module_parses_and_the_walk_sees_imports_inside_functions() -> None:
    every = modules(".")
    assert len(every) > 20
    found = {(i.module, i.target) for path in every for i in imports_of(path)}
    # httpqueue/__init__.py imports the Celery app inside __getattr__: the walk must see it
    assert ("httpqueue", "httpqueue.celery") in found
    assert ("httpqueue", "httpqueue.celery.app") in found


@pytest.mark.parametrize("source, module, is_package, target", [
    ("from . import keys", "httpqueue.store.tasks", False, "httpqueue.store.keys"),
    ("from .keys import Keys", "httpqueue.store", True, "httpqueue.store.keys"),
    ("from ..api import create_app", "httpqueue.store.tasks", False, "httpqueue.api"),
    ("from .. import worker", "httpqueue.delivery.http", False, "httpqueue.worker"),
    ("import httpqueue.worker.tasks as w", "httpqueue.store.tasks", False, "httpqueue.worker.tasks"),
])
def test_relative_and_aliased_imports_are_resolved(source: str, module: str, is_package: bool, target: str) -> None:
    assert target in [i.target for i in imports_in(source, module, is_package)]


@pytest.mark.parametrize("layer", ["store", "delivery"])
def test_store_and_delivery_import_no_upper_layer(layer: str) -> None:
    assert breaks(modules(layer), UPPER) == []


SERVER = (*UPPER, "httpqueue.store", "httpqueue.delivery", "httpqueue.publish", "httpqueue.context",
          "httpqueue.connections", "httpqueue.embedded")
"""What the client and receiver packages must not import: they run in other programs, without the server."""


@pytest.mark.parametrize("package", ["client", "receiver"])
def test_client_and_receiver_import_none_of_the_server(package: str) -> None:
    assert breaks(modules(package), SERVER) == []


def test_config_imports_nothing_of_httpqueue() -> None:
    assert [str(i) for i in imports_of(ROOT / "config.py") if within(i.target, (PACKAGE,))] == []


@pytest.mark.parametrize("name", ["services.py", "publish.py"])
def test_services_and_publish_import_neither_api_nor_worker(name: str) -> None:
    assert breaks(modules(name), API_AND_WORKER) == []


def test_the_exporter_uses_only_store_and_config_and_the_pipeline_does_not_import_it() -> None:
    assert breaks(modules("export"), UPPER) == []
    assert breaks(modules("store", "delivery"), ("httpqueue.export",)) == []


def test_the_rules_catch_an_import_hidden_in_a_function() -> None:
    source = ("import typing\nif typing.TYPE_CHECKING:\n    from httpqueue.celery import app\n"
              "def later():\n    from httpqueue.api import create_app\n    import httpqueue.worker.tasks\n"
              "class C:\n    def m(self):\n        from httpqueue import services\n")
    found = [i.target for i in imports_in(source, "httpqueue.store.tasks") if within(i.target, UPPER)]
    assert sorted(found) == sorted(["httpqueue.celery", "httpqueue.celery.app", "httpqueue.api",
                                    "httpqueue.api.create_app", "httpqueue.worker.tasks", "httpqueue.services"])
