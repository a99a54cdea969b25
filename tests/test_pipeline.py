"""stage=pipeline: steps in order with their inputs wired, finished steps skipped, a failure that says how to
resume, and every pipeline command of the README dry-run with the paper's budgets reaching the evaluated model."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata.config import RootConfig, endpoint_for, register_configs, to_typed
from autodata.pipeline import PipelineError, run_pipeline, steps
from autodata.validation import validate

ROOT = Path(__file__).resolve().parents[1]
FAKE = f"{sys.executable} {ROOT / 'tests' / 'fake_stage.py'}"
CS_STEPS = ["generate_cot", "generate_agentic", "train_cot", "train_agentic", "eval_base", "eval_grpo_cot",
            "eval_grpo_agentic", "report"]
register_configs()


def composed(overrides: list[str]) -> RootConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_typed(compose(config_name="config", overrides=overrides))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A cpu_mini pipeline whose every stage is tests/fake_stage.py; returns (cfg, calls-reader)."""
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_STAGE_LOG", str(log))
    cfg = composed(["stage=pipeline", "experiment=cpu_mini"])
    cfg.pipeline.launchers = {stage: FAKE for stage in ("generate", "train", "eval", "report")}

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return cfg, calls


def step_of(argv: list[str]) -> str:
    return Path(next(a for a in argv if a.startswith("hydra.run.dir=")).split("=", 1)[1]).name


def test_steps_run_in_order_with_earlier_run_dirs_as_inputs(fake, tmp_path):
    cfg, calls = fake
    run_pipeline(cfg, tmp_path / "exp", ["stage=pipeline", "experiment=cpu_mini", "pipeline.dry_run=false"])
    argvs = calls()
    assert [step_of(a) for a in argvs] == CS_STEPS
    by_step = {step_of(a): a for a in argvs}
    exp = tmp_path / "exp"
    # The experiment is passed on, the pipeline's own keys are not
    assert all("experiment=cpu_mini" in a and not any(x.startswith("pipeline.") for x in a) for a in argvs)
    assert f"train.dataset={exp / 'generate_cot'}" in by_step["train_cot"]
    assert "train.resume=true" in by_step["train_cot"]
    assert "models.roles.judge.temperature=1.0" in by_step["train_agentic"]  # cpu_mini's stage_overrides
    assert f"eval.model={exp / 'train_agentic'}/final" in by_step["eval_grpo_agentic"]
    assert f"'cot_test={exp / 'generate_cot'}'" in next(a for a in by_step["eval_base"] if a.startswith("eval.datasets"))
    runs = next(a for a in by_step["report"] if a.startswith("++report.runs="))
    assert f"grpo_cot/agentic_test: '{exp / 'eval_grpo_cot'}#agentic_test'" in runs
    validate(composed([a for a in by_step["report"][2:] if not a.startswith("hydra.")]))


def test_a_failed_step_stops_with_its_run_dir_and_the_resume_command(fake, tmp_path, monkeypatch):
    cfg, calls = fake
    monkeypatch.setenv("FAKE_STAGE_FAIL", "train_agentic")
    with pytest.raises(PipelineError) as info:
        run_pipeline(cfg, tmp_path / "exp", ["experiment=cpu_mini"])
    text = str(info.value)
    assert "step train_agentic (stage=train) failed with exit code 5" in text
    assert str(tmp_path / "exp" / "train_agentic") in text and "resume the pipeline" in text
    assert [step_of(a) for a in calls()] == CS_STEPS[:4]
    # Fixed: the same command skips the three finished steps and resumes at the failed one
    monkeypatch.delenv("FAKE_STAGE_FAIL")
    run_pipeline(cfg, tmp_path / "exp", ["experiment=cpu_mini"])
    assert [step_of(a) for a in calls()][4:] == CS_STEPS[3:]


def test_only_runs_the_named_steps_and_needs_their_inputs_finished(fake, tmp_path):
    cfg, calls = fake
    cfg.pipeline.only = ["eval", "report"]
    with pytest.raises(PipelineError, match=r"eval_base reads \['generate_cot', 'generate_agentic'\].*pipeline.only"):
        run_pipeline(cfg, tmp_path / "exp", ["experiment=cpu_mini"])
    assert calls() == []
    cfg.pipeline.only = ["generate", "train"]
    run_pipeline(cfg, tmp_path / "exp", ["experiment=cpu_mini"])
    cfg.pipeline.only = ["eval", "report"]
    run_pipeline(cfg, tmp_path / "exp", ["experiment=cpu_mini"])
    assert [step_of(a) for a in calls()] == CS_STEPS


def test_dry_run_prints_every_command_and_runs_none(fake, tmp_path, capsys):
    cfg, calls = fake
    cfg.pipeline.dry_run = True
    run_pipeline(cfg, tmp_path / "exp", ["experiment=cpu_mini"])
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [step_of(shlex.split(line)) for line in printed] == CS_STEPS
    assert calls() == []


def test_a_reference_to_no_step_names_the_known_ones(tmp_path):
    cfg = composed(["stage=pipeline", "experiment=cpu_mini"])
    cfg.pipeline.steps["report"].overrides.append("++report.flips={x: ['{{eval_bse}}']}")
    with pytest.raises(PipelineError, match=r"\{\{eval_bse\}\}, which is neither a step.*eval_base"):
        steps(cfg, tmp_path, [])


def test_an_experiment_without_steps_names_one_that_has_them(tmp_path):
    with pytest.raises(PipelineError, match="experiment=cpu_mini"):
        steps(composed(["stage=pipeline"]), tmp_path, [])


# ---------------------------------------------------------------- the README's commands
def readme_pipeline_commands() -> list[list[str]]:
    """Every `autodata stage=pipeline ...` command in the README's code blocks (the console script, or
    `python -m autodata.run`), as the arguments after the program."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    # Shell variables stand for job ids sbatch printed earlier in the block (pipeline.slurm.serve_jobs=[$WEAK,...])
    lines = [re.sub(r"\$[A-Z][A-Z_]*", "4242", line) for line in lines]
    commands = []
    for line in lines:
        argv = shlex.split(line) if "stage=pipeline" in line else []
        program = next((i for i, a in enumerate(argv) if a == "autodata.run" or a.rsplit("/", 1)[-1] == "autodata"),
                       None)
        if program is not None:
            commands.append(argv[program + 1:])
    return commands


def test_the_readme_shows_one_command_per_table():
    experiments = {a.split("=", 1)[1] for argv in readme_pipeline_commands() for a in argv
                   if a.startswith("experiment=")}
    assert {"cpu_mini", "paper_cs", "paper_legal", "paper_science"} <= experiments


@pytest.mark.parametrize("argv", readme_pipeline_commands(), ids=lambda a: next(
    (x for x in a if x.startswith("experiment=")), "default"))
def test_readme_pipeline_commands_dry_run_with_the_paper_budgets(argv, tmp_path):
    overrides = argv
    proc = subprocess.run([sys.executable, "-m", "autodata.run", *overrides, "pipeline.dry_run=true",
                           f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    commands = [shlex.split(line) for line in proc.stdout.splitlines() if "autodata.run" in line and
                not line.startswith("#")]
    assert commands, proc.stdout
    for command in commands:
        step_overrides = [a for a in command[command.index("autodata.run") + 1:] if not a.startswith("hydra.")]
        if "stage=eval" not in step_overrides:
            continue
        cfg = composed(step_overrides)
        validate(cfg)
        budget = cfg.eval.max_tokens or endpoint_for(cfg.models, "weak_solver").max_tokens
        assert cfg.experiment.answer_tokens and budget >= cfg.experiment.answer_tokens, (command, budget)
        if cfg.experiment.name.startswith("paper_"):
            assert budget >= 16384, command
