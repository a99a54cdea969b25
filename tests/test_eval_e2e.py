"""generate -> eval -> report end to end on CPU, through the real CLI, with the embedded model.

About 4 minutes on 2 cores: generate (CoT, 3 documents, 1 round) about 3.5 min, eval of the
held-out split with n=3 about 30 s, report about a second.

CoT keeps every task that parses, so with heldout_max_fraction=0.5 a held-out set exists
as soon as two of the three documents give a task the 135M challenger wrote parseably.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from autodata.rundir import read_jsonl
from tests.wandb_offline import read_run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_cli(stage: str, run_dir: Path, *overrides: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "autodata.run", f"stage={stage}", f"hydra.run.dir={run_dir}", "progress=false",
           *overrides]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline", WANDB_SILENT="true")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"
    return proc


def test_generate_then_eval_then_report(tmp_path):
    gen, ev, rep = tmp_path / "G", tmp_path / "E", tmp_path / "R"
    # One sample per solver: the report's data-quality rows need solver scores, not k of them
    run_cli("generate", gen, "method=cot", "corpus.limit=3", "generate.max_rounds=1",
            "generate.heldout_max_fraction=0.5", "generate.weak_samples=1", "generate.strong_samples=1")
    stats = json.loads((gen / "stats.json").read_text())
    heldout = list(read_jsonl(gen / "heldout.jsonl"))
    if not heldout:
        # The 135M challenger wrote no parseable task for two documents: nothing to evaluate.
        assert stats["accepted"] < 2 and stats["failure_reasons"], stats
        pytest.skip(f"the embedded challenger gave {stats['accepted']} parseable task(s) of 3; no held-out set")

    run_cli("eval", ev, f"eval.datasets=[{gen}]", "eval.n=3", "logger=wandb")
    samples = list(read_jsonl(ev / "samples.jsonl"))
    per_prompt = Counter(s["prompt_id"] for s in samples)
    assert len(per_prompt) == len(heldout) and set(per_prompt.values()) == {3}
    metrics = json.loads((ev / "metrics.json").read_text())["datasets"]["G"]
    for key in ("mean_at_3", "best_at_3"):
        assert 0.0 <= metrics[key]["value"] <= 1.0
    assert metrics["best_at_3"]["value"] >= metrics["mean_at_3"]["value"] - 1e-9
    # The same numbers went to the offline W&B run
    summary, _ = read_run(ev)
    assert summary["eval/G/mean_at_3"] == pytest.approx(metrics["mean_at_3"]["value"])

    run_cli("report", rep, "report=paper_cs", f"+report.runs={{base/cot_test: {ev}}}",
            f"+report.generate_runs={{cot: {gen}}}")
    md = (rep / "report.md").read_text()
    ours = metrics["mean_at_3"]
    # One held-out prompt leaves the standard error undefined: n/a, never 0.000
    error = "n/a" if ours["n"] < 2 else f"{ours['stderr']:.3f}"
    assert f"| base | {ours['value']:.3f} ± {error} (n={ours['n']}) (paper 0.630, diff " in md
    assert md.splitlines()[0].endswith("ours on SmolLM2-135M-Instruct (embedded)")
    # Absent eval runs and the Agentic generate run: "missing" beside the paper's number.
    assert "missing (paper 0.366, diff -)" in md and "missing (paper 0.458, diff -)" in md
    weak = sum(e["weak_mean"] for e in read_jsonl(gen / "accepted.jsonl")) / stats["accepted"]
    assert f"| weak mean | {weak:.3f} ± " in md and "(paper 0.677, diff " in md
    for png in ("headline_eval.png", "headline_quality.png", "scores_weak_strong.png", "gap_hist.png",
                "rounds_hist.png", "truncation.png"):
        assert (rep / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in md
