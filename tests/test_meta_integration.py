"""stage=meta_optimize through the real CLI against a real OpenAI-compatible server (llama-cpp-python's,
serving the embedded GGUF): an iteration, a SIGKILL in the middle of the next one, and the resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autodata.rundir import read_jsonl
from tests.test_generate_integration import server_overrides

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def command(run_dir: Path, server) -> list[str]:
    # The CPU experiment's meta sizes (one validation and one training document); one round per document, two
    # runs per solver, so an iteration is a few dozen calls of the 135M model.
    return [sys.executable, "-m", "autodata.run", "stage=meta_optimize", f"hydra.run.dir={run_dir}", "progress=false",
            *server_overrides(server), "meta.iterations=2", "generate.weak_samples=2", "generate.strong_samples=2",
            "models.roles.analyzer.max_tokens=192", "models.roles.implementer.max_tokens=384"]


def cache_rows(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "cache.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def test_meta_optimize_against_a_real_server_survives_sigkill(llama_server, tmp_path):
    run_dir = tmp_path / "meta"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command(run_dir, llama_server), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    history = run_dir / "history.jsonl"
    deadline = time.monotonic() + 900
    # Kill once iteration 1 is recorded and iteration 2 has started (its plan is written)
    while not (history.exists() and history.read_text().strip() and (run_dir / "iterations" / "2" / "plan.json").exists()):
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-5000:]
        assert time.monotonic() < deadline, "iteration 1 did not finish in 15 minutes"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = list(read_jsonl(history))
    assert [r["iteration"] for r in first] == [1]
    plan = json.loads((run_dir / "iterations" / "2" / "plan.json").read_text())

    done = subprocess.run(command(run_dir, llama_server), cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=env)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    rows = list(read_jsonl(history))
    assert [r["iteration"] for r in rows] == [1, 2] and rows[0] == first[0]
    # The redone iteration kept the parent and minibatch it started with
    assert rows[1]["parent"] == plan["parent"] and rows[1]["minibatch"] == plan["minibatch"]
    for row in rows:
        assert row["kept"] or row["rejection"] in ("no_analysis", "invalid_edit", "guard", "not_better", "flagged")
        assert row["reason"] or row["kept"]
    population = list(read_jsonl(run_dir / "population.jsonl"))
    assert population[0]["iteration"] == 0 and population[0]["score"] is not None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["baseline_score"] == population[0]["score"]
    assert (run_dir / "best" / "variant.json").exists() and (run_dir / "score.png").exists()
    # Every agent prompt is on disk, and no ledger row of the redone minibatch run is duplicated
    assert json.loads((run_dir / "iterations" / "2" / "agents.json").read_text())["analyzer"]["messages"]
    ledger = [r["document_id"] for r in read_jsonl(run_dir / "iterations" / "2" / "minibatch" / "documents.jsonl")]
    assert len(ledger) == len(set(ledger)) == 1

    # A finished run asks no model again
    before = cache_rows(run_dir)
    again = subprocess.run(command(run_dir, llama_server), cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert cache_rows(run_dir) == before and list(read_jsonl(history)) == rows
