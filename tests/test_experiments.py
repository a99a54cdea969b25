"""Where settings live: options write their own group only, experiments compose, and each run's recipe
names the file or override behind every non-default value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from autodata import provenance
from autodata.config import RootConfig, endpoint_for, register_configs, to_typed
from autodata.stages import STAGES
from autodata.validation import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_configs()

STAGE_INPUTS = {"train": ["train.dataset=tests/fixtures/train_run"]}
# Folders under conf/ that are not Hydra groups, or whose files may write several groups
NOT_GROUPS = ("hydra", "experiment")
# A group whose files write under another key: further judge roles are declarations of models.roles
GROUP_KEY = {"judges": "models"}
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER_EXPERIMENTS = [e for e in EXPERIMENTS if e.startswith("paper_")]
# The URLs a paper experiment needs to validate (the placeholders of its launch command)
PAPER_URLS = ["models.base_url=http://api:9/v1", "models.roles.weak_solver.base_urls=[http://n1:8000/v1]",
              "models.roles.strong_solver.base_url=http://n5:8000/v1"]


def composed(overrides: list[str]) -> RootConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_typed(compose(config_name="config", overrides=overrides))


def as_dict(cfg: RootConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def models_options() -> list[str]:
    return sorted(p.stem for p in (CONF / "models").glob("*.yaml"))


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("option", models_options())
def test_a_models_option_changes_nothing_outside_models(stage, option):
    base = [f"stage={stage}", *STAGE_INPUTS.get(stage, [])]
    before, after = as_dict(composed(base)), as_dict(composed(base + [f"models={option}"]))
    differ = sorted(k for k in before if k != "models" and before[k] != after[k])
    assert differ == [], f"models={option} changed {differ} for stage={stage}"


def written_keys(path: Path) -> list[str]:
    """Dotted paths a config file writes, with its package applied."""
    text = path.read_text()
    header = re.search(r"^# @package (\S+)", text, re.M)
    group = path.parent.relative_to(CONF).as_posix().replace("/", ".")
    package = header.group(1) if header else group
    content = OmegaConf.to_container(OmegaConf.load(path)) or {}
    content.pop("defaults", None)
    prefix = "" if package == "_global_" else package
    return [f"{prefix}.{k}" if prefix else k for k, _ in provenance.leaves(content)]


def option_files() -> list[Path]:
    return sorted(p for p in CONF.rglob("*.yaml") if len(p.relative_to(CONF).parts) > 1
                  and p.relative_to(CONF).parts[0] not in NOT_GROUPS)


@pytest.mark.parametrize("path", option_files(), ids=lambda p: str(p.relative_to(CONF)))
def test_an_option_file_writes_only_its_own_group(path):
    group = path.relative_to(CONF).parts[0]
    own = GROUP_KEY.get(group, group)
    # hydra.* is where a run dir goes, not a recipe value (stage=pipeline puts its run under runs/<experiment>)
    outside = [k for k in written_keys(path) if k.split(".")[0] not in (own, "hydra")]
    assert outside == [], f"{path.relative_to(CONF)} writes outside {own}.*: {outside}; move them to conf/experiment/"


def test_the_root_config_only_selects():
    content = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))
    assert set(content) == {"defaults", "hydra"}


def test_the_default_run_is_the_cpu_experiment():
    cfg = composed(["stage=generate"])
    assert (cfg.experiment.name, cfg.experiment.cpu_sized) == ("cpu", True)
    assert (cfg.corpus.limit, cfg.generate.max_rounds, cfg.domain.rubric_min) == (2, 2, 7)
    assert endpoint_for(cfg.models, "weak_solver").max_tokens == 160
    # Picking where models run keeps that recipe (the bug this layout removes: models=openai reset it to 10)
    moved = composed(["stage=generate", "models=openai", "models.base_url=http://h:1/v1", "models.model=m"])
    assert (moved.generate.max_rounds, moved.domain.structural_checks) == (2, False)


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates_with_every_stage(name, stage):
    urls = PAPER_URLS if name in PAPER_EXPERIMENTS else []
    cfg = composed([f"stage={stage}", f"experiment={name}", *urls, *STAGE_INPUTS.get(stage, [])])
    assert cfg.experiment.name == name
    validate(cfg)


def test_an_unknown_experiment_lists_the_known_ones():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as info:
        composed(["stage=generate", "experiment=paper_cz"])
    assert all(name in str(info.value) for name in EXPERIMENTS)


@pytest.mark.parametrize("name", PAPER_EXPERIMENTS)
def test_paper_experiments_carry_the_paper_budgets_and_sizes(name):
    cfg = composed(["stage=eval", f"experiment={name}", *PAPER_URLS])
    assert not cfg.experiment.cpu_sized
    assert endpoint_for(cfg.models, "weak_solver").max_tokens >= cfg.experiment.answer_tokens >= 16384
    assert cfg.generate.target_accepted and cfg.domain.structural_checks
    assert cfg.train.learning_rate == 1e-6
    assert provenance.warnings(cfg) == []


def test_generation_settings_of_each_experiment():
    """Privileged access and the whole-paper document cap are per-experiment choices; legal uses the paper's rule."""
    cpu = composed(["stage=generate"])
    assert cpu.generate.strong_sees_document and endpoint_for(cpu.models, "challenger").max_document_tokens == 320
    for name in PAPER_EXPERIMENTS:
        cfg = composed(["stage=generate", f"experiment={name}", *PAPER_URLS])
        assert not cfg.generate.strong_sees_document, name
        challenger = endpoint_for(cfg.models, "challenger")
        # No fixed cut: derived from the 256K context of the challenger (and QV), whole papers fit
        assert challenger.max_document_tokens is None and challenger.context_length == 262144, name
    assert composed(["stage=generate", "experiment=paper_legal", *PAPER_URLS]).domain.acceptance.policy == "loop_judge"
    science = composed(["stage=generate", "experiment=paper_science", *PAPER_URLS])
    # null: the principia domain's 3 challengers per round
    assert science.generate.challengers_per_round is None and science.domain.name == "principia"


def test_recipe_names_the_file_or_override_of_each_value():
    files = provenance.file_sources([("models/paper", "models"), ("experiment/paper_cs", "")], CONF)
    overrides = provenance.override_sources(["experiment=paper_cs", "generate.max_rounds=3", "++report.runs={a/b: x}"],
                                        groups={"experiment", "models"})
    cfg = composed(["stage=generate", "experiment=paper_cs", "generate.max_rounds=3", "++report.runs={a/b: x}"])
    got = {s.key: s.source for s in provenance.effective(cfg, files, overrides)}
    assert got["models.roles.weak_solver.max_tokens"] == "conf/experiment/paper_cs.yaml"
    assert got["models.roles.weak_solver.model"] == "conf/models/paper.yaml"
    assert got["generate.max_rounds"] == "override generate.max_rounds=3"
    # A value inside a dict set on the command line takes that override as its source
    assert got["report.runs.a/b"] == "override ++report.runs={a/b: x}"
    assert "generate.max_docs_in_flight" not in got  # still the dataclass default


def test_a_cpu_recipe_on_a_real_endpoint_says_so_with_the_fix():
    cfg = composed(["stage=eval", "models=openai", "models.base_url=http://h:1/v1", "models.model=Qwen/Qwen3.5-4B"])
    (line,) = [w for w in provenance.warnings(cfg) if "sized for the embedded model" in w]
    assert "experiment=paper_cs" in line


def test_a_budget_far_below_the_experiment_warns():
    cfg = composed(["stage=eval", "experiment=paper_cs", *PAPER_URLS, "eval.max_tokens=160"])
    (line,) = provenance.warnings(cfg)
    assert "160 tokens, far below the 16384" in line
    trained = composed(["stage=train", "experiment=paper_science", *PAPER_URLS, "train.max_completion_length=1024",
                        *STAGE_INPUTS["train"]])
    assert "train.max_completion_length" in provenance.warnings(trained)[0]


def test_each_stage_writes_its_recipe_into_the_run_dir(tmp_path):
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "autodata.run", "stage=pipeline", "experiment=cpu_mini",
                           "pipeline.dry_run=true", "models=openai", "models.base_url=http://h:1/v1", "models.model=m",
                           f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "recipe.json").read_text())
    sources = {s["key"]: s["source"] for s in saved["settings"]}
    assert sources["models.base_url"] == "override models.base_url=http://h:1/v1"
    assert sources["corpus.limit"] == "conf/experiment/cpu_mini.yaml"
    assert sources["generate.solver_wave"] == "conf/experiment/cpu.yaml"
    assert sources["pipeline.steps.report.stage"] == "conf/pipeline/cs.yaml"
    assert any("sized for the embedded model" in w for w in saved["warnings"])
    assert "sized for the embedded model" in proc.stdout + proc.stderr


def test_an_allowed_protected_template_override_is_recorded_in_the_recipe(tmp_path):
    (tmp_path / "judge.j2").write_text("{% block user %}{{ answer }}{% endblock %}")
    cfg = composed(["stage=eval", f"domain.template_dir={tmp_path}", "domain.allow_protected_templates=true"])
    (line,) = [w for w in provenance.warnings(cfg) if "protected" in w]
    assert "judge.j2" in line and "not comparable" in line
    refused = composed(["stage=eval", f"domain.template_dir={tmp_path}", "eval.datasets=[x.jsonl]"])
    with pytest.raises(ConfigError, match=r"domain.template_dir .* replaces protected template\(s\) judge.j2"):
        validate(refused)
