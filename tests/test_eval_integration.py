"""stage=eval through the real CLI against a real OpenAI-compatible server (llama-cpp-python serving the
embedded GGUF): killed mid-run and resumed, then a second judge added to the finished run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from autodata.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
HELDOUT_RUN = ROOT / "tests/fixtures/train_run"
pytestmark = pytest.mark.slow


def command(run_dir: Path, server, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "autodata.run", "stage=eval", f"hydra.run.dir={run_dir}", "progress=false",
            "models=openai", f"models.base_url={server.base_url}", f"models.model={server.model}",
            f"eval.datasets=[{HELDOUT_RUN}]", "eval.n=2", "eval.max_prompts_in_flight=1",
            "models.roles.weak_solver.max_tokens=48", "models.roles.judge.max_tokens=160", *overrides]


def run_cli(cmd: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"
    return proc


ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def test_a_killed_eval_resumes_and_a_judge_added_later_grades_the_drawn_samples(llama_server, tmp_path):
    run_dir = tmp_path / "eval"
    # Kill the run as soon as its first prompt is finished (the second is then being sampled or graded).
    proc = subprocess.Popen(command(run_dir, llama_server), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ledger = run_dir / "prompts.jsonl"
    deadline = time.monotonic() + 600
    while not (ledger.exists() and ledger.read_text().strip()):
        assert proc.poll() is None, "eval ended before it could be killed"
        assert time.monotonic() < deadline, "no prompt finished within 10 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    finished = [r["prompt_id"] for r in read_jsonl(ledger)]
    assert len(finished) == 1 and not (run_dir / "metrics.json").exists()
    kept = {(s["prompt_id"], s["sample"]): s["completion"] for s in read_jsonl(run_dir / "samples.jsonl")
            if s["prompt_id"] == finished[0]}
    assert len(kept) == 2

    out = run_cli(command(run_dir, llama_server))
    assert "resuming: 1 prompts already evaluated, 1 to go" in out.stderr + out.stdout
    samples = list(read_jsonl(run_dir / "samples.jsonl"))
    assert Counter(s["prompt_id"] for s in samples) == Counter({pid: 2 for pid in
                                                                 (r["id"] for r in read_jsonl(HELDOUT_RUN / "heldout.jsonl"))})
    # The finished prompt was not sampled again
    assert {(s["prompt_id"], s["sample"]): s["completion"] for s in samples if s["prompt_id"] == finished[0]} == kept
    metrics = json.loads((run_dir / "metrics.json").read_text())["datasets"]["train_run"]
    assert metrics["prompts"] == 2 and metrics["samples"] == 4

    # A second judge (declared by conf/judges/kimi.yaml, here pointed at the same server) grades the drawn samples.
    out = run_cli(command(run_dir, llama_server, "+judges=kimi", "eval.judges=[judge,judge_kimi]",
                          f"models.roles.judge_kimi.base_url={llama_server.base_url}",
                          f"models.roles.judge_kimi.model={llama_server.model}", "models.roles.judge_kimi.api_key_env="))
    samples_after = list(read_jsonl(run_dir / "samples.jsonl"))
    assert [s["completion"] for s in samples_after] == [s["completion"] for s in samples]
    assert all(set(s["grades"]) == {"judge", "judge_kimi"} for s in samples_after)
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["judges"] == {"judge": llama_server.model, "judge_kimi": llama_server.model}
    by_judge = result["datasets"]["train_run"]["by_judge"]
    assert set(by_judge) == {"judge", "judge_kimi"}
    assert result["grades_redone_this_run"] >= 4
