"""Protocol-level stand-ins for servers this machine cannot install, on loopback, for the official clients.

:class:`BulkStandIn` answers Elasticsearch's ``_bulk`` and ``_index_template``
APIs the way Elasticsearch 8/9 does: it checks the NDJSON (an action line, then
a source line, each valid JSON, ``_index`` and ``_id`` present), keeps the
documents by index and id (so an ``index`` action with a known id overwrites),
and answers ``{"took", "errors", "items"}`` with one item per action in order.
Every answer carries ``X-Elastic-Product: Elasticsearch``, which the client
requires. A test can script failures: per-item statuses for given ids (429,
400 ``mapper_parsing_exception``), or whole-request statuses (429, 503).
It is not Elasticsearch: no mappings are applied, nothing is searched.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_TYPES = {429: "es_rejected_execution_exception", 400: "mapper_parsing_exception",
               503: "unavailable_shards_exception"}


@dataclasses.dataclass
class BulkStandIn:
    """A threaded HTTP server on 127.0.0.1 answering ``_bulk`` like Elasticsearch."""

    documents: dict[tuple[str, str], dict[str, t.Any]] = dataclasses.field(default_factory=dict)
    templates: dict[str, dict[str, t.Any]] = dataclasses.field(default_factory=dict)
    item_failures: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    """Event id -> statuses its next actions get, one per request (then it is accepted)."""
    request_failures: list[int] = dataclasses.field(default_factory=list)
    """Statuses the next whole requests get, one each."""
    bulk_requests: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    """What the stand-in found wrong in a request (a test asserts it stays empty)."""

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"elasticsearch://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> BulkStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bulk(self, body: bytes) -> tuple[int, dict[str, t.Any]]:
        """Apply one ``_bulk`` body; the status and JSON answer."""
        with self.lock:
            self.bulk_requests += 1
            if self.request_failures:
                status = self.request_failures.pop(0)
                return status, {"error": {"type": ERROR_TYPES.get(status, "exception"), "reason": "stand-in"},
                                "status": status}
            if not body.endswith(b"\n"):
                self.problems.append("the NDJSON body does not end with a newline")
            lines = [line for line in body.split(b"\n") if line.strip()]
            items = []
            for action_line, source_line in zip(lines[::2], lines[1::2]):
                items.append(self._action(json.loads(action_line), json.loads(source_line)))
            if len(lines) % 2:
                self.problems.append("an action line without its source line")
            errors = any("error" in next(iter(i.values())) for i in items)
            return 200, {"took": 1, "errors": errors, "items": items}

    def _action(self, action: dict[str, t.Any], source: dict[str, t.Any]) -> dict[str, t.Any]:
        (op, meta), = action.items()
        if op not in ("index", "create"):
            self.problems.append(f"unexpected action {op}")
        index, doc_id = meta.get("_index"), meta.get("_id")
        if not index or not doc_id:
            self.problems.append(f"action without _index or _id: {action}")
        failures = self.item_failures.get(doc_id, [])
        if failures:
            status = failures.pop(0)
            return {op: {"_index": index, "_id": doc_id, "status": status,
                         "error": {"type": ERROR_TYPES.get(status, "exception"), "reason": "stand-in refusal"}}}
        known = (index, doc_id) in self.documents
        if op == "create" and known:
            return {op: {"_index": index, "_id": doc_id, "status": 409,
                         "error": {"type": "version_conflict_engine_exception", "reason": "exists"}}}
        self.documents[(index, doc_id)] = source
        return {op: {"_index": index, "_id": doc_id, "_version": 2 if known else 1,
                     "result": "updated" if known else "created", "status": 200 if known else 201}}


def _handler(standin: BulkStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: t.Mapping[str, t.Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Type", "application/vnd.elasticsearch+json; compatible-with=8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_PUT(self) -> None:
            self._route()

        def do_POST(self) -> None:
            self._route()

        def _route(self) -> None:
            body = self._body()
            path = self.path.split("?")[0]
            if path.endswith("/_bulk"):
                if "x-ndjson" not in (self.headers.get("Content-Type") or ""):
                    standin.problems.append(f"_bulk with content type {self.headers.get('Content-Type')}")
                self._answer(*standin.bulk(body))
            elif path.startswith("/_index_template/"):
                standin.templates[path.rsplit("/", 1)[1]] = json.loads(body)
                self._answer(200, {"acknowledged": True})
            else:
                self._answer(404, {"error": {"type": "resource_not_found_exception", "reason": path}, "status": 404})

        def log_message(self, *args: t.Any) -> None:
            pass

    return Handler
