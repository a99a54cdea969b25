"""W&B per experiment: every stage's run lands in the experiment's group with job_type = stage, and generate
logs the accepted examples' distributions and a table of them (read back from offline runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autodata.config import RootConfig
from autodata.tracking import TABLE_QUESTION_CHARS, accepted_panels, run_group, run_tags
from tests.test_generate_loop import Scenario, make_cfg, run
from tests.wandb_offline import read_run, read_run_info, run_file


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)


def test_the_group_is_the_experiment_unless_wandb_run_group_is_set():
    cfg = RootConfig(stage="train")
    assert run_group(cfg, {}) is None  # experiment=null: no group
    cfg.experiment.name = "paper_cs"
    assert run_group(cfg, {}) == "paper_cs"
    assert run_group(cfg, {"WANDB_RUN_GROUP": "lr_sweep"}) == "lr_sweep"
    cfg.method.name = "cot"
    assert run_tags(cfg, "train") == ["train", "cs", "cot"]


def test_the_examples_table_shortens_questions_and_nothing_is_logged_without_examples():
    assert accepted_panels([]) == {}
    rows = [{"id": "agentic/d0", "question": "q" * 500, "weak_mean": 0.2, "strong_mean": 0.9, "gap": 0.7,
             "rounds_used": 3}, {"id": "agentic/d1", "question": "short", "weak_mean": 0.4, "strong_mean": 0.7,
                                 "gap": 0.3, "rounds_used": 1}]
    panels = accepted_panels(rows)
    assert sorted(panels) == ["generate/accepted_examples", "generate/gap_accepted_hist",
                              "generate/rounds_used_accepted_hist", "generate/strong_mean_accepted_hist",
                              "generate/weak_mean_accepted_hist"]
    first, second = panels["generate/accepted_examples"].data
    assert len(first[1]) == TABLE_QUESTION_CHARS and first[1].endswith("\u2026")
    assert second == ["agentic/d1", "short", 0.4, 0.7, 0.3, 1]
    assert sum(panels["generate/gap_accepted_hist"].histogram) == 2


def test_generate_logs_into_the_experiment_group_with_histograms_and_a_table(tmp_path, offline):
    cfg = make_cfg(tmp_path, n_docs=2)
    cfg.logger, cfg.experiment.name = "wandb", "paper_cs"
    # Each document: round 1 too easy, round 2 accepted (weak 0, strong 1: gap 1)
    run(cfg, tmp_path, Scenario([{"weak": "GOOD", "strong": "GOOD"}, {"weak": "BAD", "strong": "GOOD"}]))

    run_dir = tmp_path / "run"
    assert read_run_info(run_dir) == {"group": "paper_cs", "job_type": "generate",
                                      "tags": ["generate", "cs", "agentic"], "name": "paper_cs/generate"}
    _, history = read_run(run_dir)
    (logged,) = [h for h in history if "generate/accepted_examples/_type" in h]
    # Two accepted examples in each histogram: weak means 0.0, strong means 1.0, gaps 1.0, 2 rounds each
    for key in ("weak_mean", "strong_mean", "gap", "rounds_used"):
        assert logged[f"generate/{key}_accepted_hist/_type"] == "histogram"
        assert sum(logged[f"generate/{key}_accepted_hist/values"]) == 2
    table_file = run_file(run_dir).parent / "files" / logged["generate/accepted_examples/path"]
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["id", "question", "weak_mean", "strong_mean", "gap", "rounds_used"]
    assert sorted(row[0] for row in table["data"]) == ["agentic/doc0", "agentic/doc1"]
    assert {tuple(row[2:]) for row in table["data"]} == {(0.0, 1.0, 1.0, 2)}


def test_the_plan_joins_the_same_group_and_a_sweep_may_rename_it(tmp_path, offline, monkeypatch):
    from autodata.plan import run as plan_run

    cfg = RootConfig(stage="plan")
    cfg.logger, cfg.experiment.name, cfg.plan.target = "wandb", "paper_cs", 100
    plan_run(cfg, tmp_path / "plan")
    assert read_run_info(tmp_path / "plan")["group"] == "paper_cs"
    assert read_run_info(tmp_path / "plan")["job_type"] == "plan"
    summary, _ = read_run(tmp_path / "plan")
    # 100 accepted x 6.59 rounds = 659 challenger calls (the analytic model)
    assert summary["plan/roles/challenger/calls"] == pytest.approx(659)

    monkeypatch.setenv("WANDB_RUN_GROUP", "sweep_7")
    plan_run(cfg, tmp_path / "plan_sweep")
    assert read_run_info(tmp_path / "plan_sweep")["group"] == "sweep_7"


def test_sweep_points_and_named_run_dirs_get_their_own_names(tmp_path):
    """`<experiment>/<stage>/<swept values>` for each point of a Hydra sweep (read back from the offline runs);
    `<experiment>/<stage>/<run dir>` when hydra.run.dir names the run dir (the pipeline's steps)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    env.pop("WANDB_RUN_GROUP", None)
    sweep = subprocess.run([sys.executable, "-m", "autodata.run", "-m", "stage=plan", "plan.target=100,200",
                            "generate.seed=3", "logger=wandb", "progress=false",
                            f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                           cwd=root, capture_output=True, text=True, timeout=180, env=env)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    names = [read_run_info(tmp_path / "sweep" / n)["name"] for n in ("0", "1")]
    # Only the swept key, cut to its last part; the fixed override (generate.seed) stays out
    assert names == ["cpu/plan/target=100", "cpu/plan/target=200"]

    named = subprocess.run([sys.executable, "-m", "autodata.run", "stage=plan", "plan.target=100", "logger=wandb",
                            "progress=false", f"hydra.run.dir={tmp_path / 'plan_cs'}"],
                           cwd=root, capture_output=True, text=True, timeout=180, env=env)
    assert named.returncode == 0, named.stderr[-3000:]
    assert read_run_info(tmp_path / "plan_cs")["name"] == "cpu/plan/plan_cs"


def test_a_sweep_label_keeps_keys_whole_where_their_last_parts_collide():
    from autodata.tracking import sweep_label

    task = ["stage=eval", "models.roles.judge.temperature=0.5", "eval.temperature=0.7", "eval.n=3"]
    assert sweep_label(task, {"models.roles.judge.temperature", "eval.temperature"}) == \
        "models.roles.judge.temperature=0.5,eval.temperature=0.7"
    # Swept keys unknown (no multirun.yaml): every override, in order
    assert sweep_label(["stage=eval", "eval.n=3"], None) == "stage=eval,n=3"
