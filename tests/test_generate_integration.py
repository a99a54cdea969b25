"""The generate stage end to end, through the real CLI.

- against a real OpenAI-compatible server process (llama-cpp-python's, serving the
  embedded GGUF) for every domain and both methods, plus resume from the same run dir;
- on the embedded model through the local transformers backend (the smoke test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autodata.generate.trajectory import render_call
from autodata.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_cli(run_dir: Path, *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "autodata.run", "stage=generate", f"hydra.run.dir={run_dir}", "progress=false",
           *overrides]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"
    return proc


def server_overrides(server) -> list[str]:
    # The same CPU sizing as the embedded preset (capped fields, short rubrics), on the server.
    return ["models=openai", f"models.base_url={server.base_url}", f"models.model={server.model}",
            "models.default.max_tokens=160", "models.default.max_document_tokens=320",
            "models.roles.challenger.max_tokens=640", "generate.max_rounds=1",
            "domain.max_field_chars=200", "domain.max_item_chars=64", "domain.rubric_min=7",
            "domain.rubric_max=8", "domain.positive_only=true", "domain.max_weight=7",
            "domain.structural_checks=false",
            # One sample per solver: these tests prove the path through a real server, not the sampling (the
            # scripted loop tests cover k runs, early exit and waves); each sample costs a judge call on 2 cores
            "generate.weak_samples=1", "generate.strong_samples=1"]


def assert_run_outputs(run_dir: Path) -> dict:
    for name in ("config.yaml", "run_info.json", "rounds.jsonl", "accepted.jsonl", "documents.jsonl",
                 "train.jsonl", "heldout.jsonl", "stats.json"):
        assert (run_dir / name).exists(), f"{name} missing from {run_dir}"
    assert (run_dir / "dataset" / "dataset_dict.json").exists()
    info = json.loads((run_dir / "run_info.json").read_text())
    assert "commit" in info["starts"][0]["git"]
    stats = json.loads((run_dir / "stats.json").read_text())
    rounds = list(read_jsonl(run_dir / "rounds.jsonl"))
    assert rounds, "no round was recorded"
    first_call = rounds[0]["calls"][0]
    # The prompt is kept as a reference (template, hash, the document by id), its text in the corpus once
    assert first_call["prompt"]["sha256"] and first_call["prompt"]["document"]["id"] == rounds[0]["document_id"]
    assert first_call["outputs"] and first_call["completion_tokens"] > 0
    # ... and renders again from the run dir (its config.yaml, corpus and rows) to the hash that was sent
    assert render_call(run_dir, rounds[0]["document_id"], rounds[0]["round"], first_call["step"])
    assert stats["documents_finished"] == stats["documents"]
    assert stats["per_role"]["challenger"]["calls"] >= 1
    if stats["accepted"] == 0:
        assert stats["why_none_accepted"]
    return stats


def test_generate_against_a_real_openai_compatible_server_and_resume(llama_server, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(run_dir, *server_overrides(llama_server), "corpus.limit=2")
    stats = assert_run_outputs(run_dir)
    assert stats["documents"] == 2
    rounds_before = (run_dir / "rounds.jsonl").read_text()
    cache_rows_before = _cache_rows(run_dir)

    # Same dir again: everything is finished, nothing is redone or duplicated.
    run_cli(run_dir, *server_overrides(llama_server), "corpus.limit=2")
    assert (run_dir / "rounds.jsonl").read_text() == rounds_before
    assert _cache_rows(run_dir) == cache_rows_before
    assert len(json.loads((run_dir / "run_info.json").read_text())["starts"]) == 2

    # Widen the corpus: only the new document is processed.
    run_cli(run_dir, *server_overrides(llama_server), "corpus.limit=3")
    ledger = [r["document_id"] for r in read_jsonl(run_dir / "documents.jsonl")]
    assert len(ledger) == len(set(ledger)) == 3


@pytest.mark.parametrize("extra", [
    ["method=cot"],
    ["domain=legal", "corpus=legal_fixture", "corpus.limit=1"],
    # Principia's k-of-n thresholds (strong_min_correct 3, weak_max_correct 1) need more than one sample
    ["domain=principia", "corpus=principia_fixture", "corpus.limit=1", "generate.weak_samples=2",
     "generate.strong_samples=2", "domain.acceptance.strong_min_correct=2"],
], ids=["cot", "legal", "principia"])
def test_methods_and_domains_against_the_server(llama_server, tmp_path, extra):
    run_dir = tmp_path / "run"
    overrides = server_overrides(llama_server) + ["corpus.limit=1"] + extra
    run_cli(run_dir, *overrides)
    stats = assert_run_outputs(run_dir)
    if "method=cot" in extra:
        # CoT keeps every task that parses, one round each, with solver scores recorded.
        assert stats["rounds"] == 1


def test_unreachable_server_fails_fast_naming_the_url(tmp_path):
    cmd = [sys.executable, "-m", "autodata.run", "stage=generate", f"hydra.run.dir={tmp_path / 'run'}",
           "models=openai", "models.base_url=http://127.0.0.1:9/v1", "models.model=m",
           "models.default.max_retries=0", "models.default.timeout_s=2", "corpus.limit=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "127.0.0.1:9" in proc.stderr + proc.stdout


def test_impossible_config_is_refused_before_any_work(tmp_path):
    cmd = [sys.executable, "-m", "autodata.run", "stage=generate", f"hydra.run.dir={tmp_path / 'run'}",
           "domain.acceptance.strong_min=0.4", "domain.acceptance.weak_max=0.5"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "raise strong_min or lower weak_max" in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "rounds.jsonl").exists()


def test_embedded_model_end_to_end_on_one_document(tmp_path):
    """The smoke test: the default (local transformers, embedded SmolLM2) on one document."""
    run_dir = tmp_path / "run"
    run_cli(run_dir, "corpus.limit=1", "generate.max_rounds=1", "generate.weak_samples=1",
            "generate.strong_samples=1", timeout=1200)
    stats = assert_run_outputs(run_dir)
    assert stats["documents"] == 1


def _cache_rows(run_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(run_dir / "cache.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
