"""Faults a real server makes, through the CLI: every document ends in the ledger with an outcome, retried
faults are counted in stats.json by kind, and the exit code says when documents ended in error (issue 10).

The server is http.server in a thread of this process: the generate run in its own process talks to it over a
real socket. Requests are answered one at a time in arrival order (max_concurrency=1, one document in flight),
so the fault schedule is deterministic.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Iterator

import pytest

from autodata.rundir import read_jsonl
from tests.test_run_errors import assert_refused, run_cli

MODEL = "fault-model"
# Listed by GET /models, but every chat for it answers 404 (a model unloaded while the run goes on)
VANISHED = "vanished-model"
# A document carrying this word gets a 200 that is never a ChatCompletion, however often it is retried
POISON = "POISON"
# The n-th ordinary chat request (0-based) gets this fault before the request after it is answered normally;
# each fault is followed by its retry, so no request fails for good
FAULTS = {0: "500", 2: "429", 4: "not_json", 6: "truncated"}
# What a successful answer says: garbage for every role (the challenger's JSON cannot be parsed), which the loop
# must turn into a rejected round, not an error
GARBAGE = "Sure! The answer is 42, probably."


class FaultServer(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.ordinary = 0
        self.poisoned = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FaultServer

    def do_GET(self) -> None:
        self._send(200, json.dumps({"object": "list", "data": [{"id": MODEL}, {"id": VANISHED}]}))

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body["model"] != MODEL:
            self._send(404, json.dumps({"error": {"message": f"The model `{body['model']}` does not exist."}}))
            return
        if any(POISON in m["content"] for m in body["messages"]):
            with self.server.lock:
                self.server.poisoned += 1
            self._send(200, "<html>502 Bad Gateway</html>", "text/html")
            return
        with self.server.lock:
            fault = FAULTS.get(self.server.ordinary)
            self.server.ordinary += 1
        if fault == "500":
            self._send(500, '{"error": {"message": "CUDA out of memory"}}')
        elif fault == "429":
            self._send(429, '{"error": {"message": "slow down"}}', headers={"Retry-After": "0"})
        elif fault == "not_json":
            self._send(200, "upstream connect error or disconnect/reset before headers", "text/plain")
        elif fault == "truncated":
            self._send(200, '{"id": "x", "choices": [{"index": 0, "message": {"con')
        else:
            choices = [{"index": i, "message": {"role": "assistant", "content": GARBAGE}, "finish_reason": "stop"}
                       for i in range(int(body.get("n") or 1))]
            self._send(200, json.dumps({"id": "x", "object": "chat.completion", "choices": choices,
                                        "usage": {"prompt_tokens": 10, "completion_tokens": 5}}))

    def _send(self, status: int, text: str, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        raw = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server: FaultServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def corpus(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"doc{i}.md").write_text(f"Document {i}. " + "Boolean operators short-circuit in Python. " * 10)
    (docs / "doc3.md").write_text(f"Document 3 {POISON}. " + "Hash tables resolve collisions by chaining. " * 10)
    return docs


def overrides(server: FaultServer, docs: Path, model: str = MODEL) -> list[str]:
    # One request at a time keeps the fault schedule in arrival order; one round per document keeps it short
    return ["models=openai", f"models.base_url={url_of(server)}", f"models.model={model}", "corpus=folder",
            f"corpus.path={docs}", "corpus.limit=null", "generate.max_rounds=1", "generate.max_docs_in_flight=1",
            "models.default.max_concurrency=1", "models.default.max_retries=1", "models.default.timeout_s=10"]


def test_every_fault_kind_ends_in_the_ledger_and_the_exit_code(tmp_path, fault_server):
    docs, run_dir = corpus(tmp_path), tmp_path / "run"
    proc = run_cli(run_dir, *overrides(fault_server, docs))
    out = assert_refused(proc, 5, "1 of 4 documents ended in error", "exit code 5")
    ledger = {row["document_id"]: row for row in read_jsonl(run_dir / "documents.jsonl")}
    assert len(ledger) == 4, out
    errors = {doc_id for doc_id, row in ledger.items() if row["status"] == "error"}
    assert len(errors) == 1 and "502 Bad Gateway" in ledger[errors.pop()]["reason"]
    assert all(row["status"] for row in ledger.values())
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["document_errors"] == 1 and stats["documents_finished"] == 3
    # Two invalid bodies on the schedule, and the poisoned document's first attempt of its one retry
    assert stats["retries"] == {"http_429": 1, "http_500": 1, "invalid_json": 3}, stats["retries"]
    assert fault_server.poisoned == 2

    # Resume redoes the document in error (and only it); allowed errors exit 0
    proc = run_cli(run_dir, *overrides(fault_server, docs), "generate.allow_document_errors=true")
    assert_refused(proc, 0, "1 of 4 documents ended in error")
    assert fault_server.poisoned == 4
    rows = list(read_jsonl(run_dir / "documents.jsonl"))
    assert len(rows) == 4 and sum(r["status"] == "error" for r in rows) == 1


def test_a_model_the_server_does_not_list_fails_the_start_up_check(tmp_path, fault_server):
    proc = run_cli(tmp_path / "run", *overrides(fault_server, corpus(tmp_path), model="no-such-model"))
    assert_refused(proc, 3, "does not serve model 'no-such-model'", url_of(fault_server), f"'{MODEL}'",
                   "Nothing was generated")


def test_a_404_during_the_run_stops_it_with_the_resume_hint(tmp_path, fault_server):
    run_dir = tmp_path / "run"
    proc = run_cli(run_dir, *overrides(fault_server, corpus(tmp_path), model=VANISHED))
    assert_refused(proc, 3, "answered 404", f"'{VANISHED}'", "rerun the same command")
    assert not list(read_jsonl(run_dir / "documents.jsonl"))
