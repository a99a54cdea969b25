"""Bad inputs through the CLI: one clear message and the documented exit code (2 config or input, 3 endpoint),
never a traceback; a rejected config changes no file of the run dir, and a pasted API key reaches no file."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from autodata.config import RootConfig
from autodata.validation import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]
# A key-shaped value, as someone would paste it into api_key_env
PASTED_KEY = "sk-proj-Zq8vT3xW9kLm2Nb7Rc4Yd1Hf6Jg0Ps5A"


def run_cli(run_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "autodata.run", "stage=generate", f"hydra.run.dir={run_dir}", "progress=false",
           *overrides]
    env = dict(env if env is not None else os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def assert_refused(proc: subprocess.CompletedProcess, code: int, *phrases: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out, out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} missing from:\n{out}"
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_empty_corpus_folder(tmp_path):
    (tmp_path / "docs").mkdir()
    proc = run_cli(tmp_path / "run", "corpus=folder", f"corpus.path={tmp_path / 'docs'}")
    assert_refused(proc, 2, "is an empty folder", "point corpus.path at the folder")


def test_a_corpus_folder_of_binary_files(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "paper.pdf").write_bytes(b"%PDF-1.7\x00\x01")
    (docs / "notes.txt").write_bytes(b"\x00\x01\x02 not text")
    proc = run_cli(tmp_path / "run", "corpus=folder", f"corpus.path={docs}")
    assert_refused(proc, 2, "holds 2 file(s) but none is readable text", "no text suffix: paper.pdf",
                   "binary content: notes.txt", "UTF-8 text files")


def test_a_missing_corpus_path(tmp_path):
    proc = run_cli(tmp_path / "run", "corpus=folder", f"corpus.path={tmp_path / 'nowhere'}")
    assert_refused(proc, 2, f"corpus.path='{tmp_path / 'nowhere'}' does not exist", "fix the path")


def test_a_jsonl_corpus_without_the_text_field(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"content": "Boolean operators short-circuit in Python.", "id": "a"}\n')
    proc = run_cli(tmp_path / "run", "corpus=jsonl", f"corpus.path={corpus}")
    assert_refused(proc, 2, "has no field 'text'", "corpus.text_field=content")


def test_an_api_key_variable_that_is_not_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AUTODATA_UNSET_KEY"}
    proc = run_cli(tmp_path / "run", "models=openai", "models.base_url=http://127.0.0.1:9/v1", "models.model=m",
                   "models.api_key_env=AUTODATA_UNSET_KEY", env=env)
    assert_refused(proc, 2, "('AUTODATA_UNSET_KEY') names an environment variable that is not set",
                   "export AUTODATA_UNSET_KEY=")
    # Refused before anything is written
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """An OpenAI-compatible URL whose every answer is 401 (a wrong key)."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_401_at_start_exits_3_naming_the_key_variable(tmp_path, refusing_server):
    env = dict(os.environ, AUTODATA_TEST_KEY="wrong-key")
    proc = run_cli(tmp_path / "run", "models=openai", f"models.base_url={refusing_server}", "models.model=m",
                   "models.api_key_env=AUTODATA_TEST_KEY", "models.default.max_retries=0", env=env)
    out = assert_refused(proc, 3, f"{refusing_server}/models answered 401", "Incorrect API key provided",
                         "refused the API key read from $AUTODATA_TEST_KEY", "Nothing was generated")
    assert "wrong-key" not in out


def existing_run(run_dir: Path) -> dict[str, bytes]:
    """A run dir as an earlier start left it (its own config copies, log and outputs)."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("stage: generate\ngenerate:\n  max_rounds: 2\n")
    (run_dir / "config.yaml").write_text("stage: generate\ngenerate:\n  max_rounds: 2\n")
    (run_dir / "run_info.json").write_text('{"starts": [{"argv": ["autodata.run"]}]}')
    (run_dir / "run.log").write_text("[earlier start] accepted 1 of 2 documents\n")
    (run_dir / "accepted.jsonl").write_text('{"document_id": "a"}\n')
    return snapshot(run_dir)


def test_a_rejected_config_leaves_an_existing_run_dir_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    before = existing_run(run_dir)
    proc = run_cli(run_dir, "domain.acceptance.strong_min=0.4", "domain.acceptance.weak_max=0.5")
    assert_refused(proc, 2, "raise strong_min or lower weak_max")
    assert snapshot(run_dir) == before


def test_a_pasted_key_is_refused_and_reaches_no_file(tmp_path):
    run_dir = tmp_path / "run"
    before = existing_run(run_dir)
    fresh = tmp_path / "fresh"
    for where in (run_dir, fresh):
        proc = run_cli(where, "models=openai", "models.base_url=http://127.0.0.1:9/v1", "models.model=m",
                       f"models.roles.judge.api_key_env={PASTED_KEY}")
        out = assert_refused(proc, 2, "models.roles.judge.api_key_env (<not shown: 40 characters>)",
                             "looks like the API key itself", "set models.roles.judge.api_key_env=MY_API_KEY")
        assert PASTED_KEY not in out
    assert snapshot(run_dir) == before
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(PASTED_KEY.encode() in p.read_bytes() for p in files)


def test_api_key_env_rules_in_validation():
    cfg = RootConfig(stage="generate")
    cfg.models.backend, cfg.models.base_url, cfg.models.model = "openai", "http://h:1/v1", "m"
    cfg.models.api_key_env = "MY_KEY"
    validate(cfg)  # without an environment to check against, only the name is checked
    validate(cfg, env={"MY_KEY": "k"})
    with pytest.raises(ConfigError, match="names an environment variable that is not set"):
        validate(cfg, env={"MY_KEY": ""})
    # No key for a server without authentication
    cfg.models.api_key_env = ""
    validate(cfg, env={})
    # A pasted key is refused whatever the stage, and never repeated
    for stage in ("generate", "train", "eval", "report", "pipeline"):
        cfg = RootConfig(stage=stage)
        cfg.models.default.api_key_env = PASTED_KEY
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        assert "models.default.api_key_env" in str(info.value) and PASTED_KEY not in str(info.value)


def test_corpus_doctests():
    import doctest

    import autodata.corpus as corpus

    assert doctest.testmod(corpus).failed == 0
