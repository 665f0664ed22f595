"""Sphinx configuration of httpqueue's documentation (``make docs``: HTML in docs/_build/html, warnings fail).

The HTTP API reference is generated from the code at each build (the OpenAPI
document the running service serves at ``/openapi.json``), so it cannot drift
from it; the configuration table (``python -m httpqueue.config --write``) is
checked against the settings by the tests.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import httpqueue

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "_generated"

project = "httpqueue"
author = "the httpqueue authors"
copyright = "2026, the httpqueue authors"
release = httpqueue.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinxcontrib.openapi",
]
exclude_patterns = ["_build", "_generated", "examples", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = f"httpqueue {release}"
nitpicky = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
intersphinx_mapping = {"python": ("https://docs.python.org/3", None)} if os.environ.get("DOCS_ONLINE") else {}
suppress_warnings = ["config.cache"]


def write_if_changed(path: Path, text: str) -> None:
    """Rewrite a generated file only when its text changes (Sphinx then rebuilds only what depends on it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def openapi_document() -> str:
    """The OpenAPI document of an app with the default settings (no Redis is contacted to build it)."""
    from httpqueue.api import create_app
    from httpqueue.config import Settings

    app = create_app(Settings.load({"redis_url": "redis://127.0.0.1:1/0"}, environ={}))
    spec = app.test_client().get("/openapi.json").get_json()
    for operations in spec["paths"].values():  # the renderer takes numbered answers only: the page
        for operation in operations.values():   # says once that any operation may answer an error
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("default", None)
    return json.dumps(spec, indent=1, sort_keys=True)


write_if_changed(GENERATED / "openapi.json", openapi_document())
