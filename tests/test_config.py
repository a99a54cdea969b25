"""Config composition, the stage registry, and validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata.config import ROLES, RootConfig, endpoint_for, register_configs, to_typed
from autodata.stages import STAGES, UnknownStage, resolve_stage, stage_config_names
from autodata.validation import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_configs()


def compose_typed(overrides: list[str]) -> RootConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_typed(compose(config_name="config", overrides=overrides))


def group_options() -> list[tuple[str, str]]:
    """Every (group, option) under conf/, found recursively (hydra/ excluded: launcher plugins)."""
    options = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if len(rel.parts) < 2 or rel.parts[0] == "hydra":
            continue
        options.append(("/".join(rel.parts[:-1]), path.stem))
    return options


def test_registered_stages_match_conf_stage_files():
    assert set(STAGES) == stage_config_names(CONF)


def test_unknown_stage_names_known_ones():
    with pytest.raises(UnknownStage, match="unknown stage .genrate.; known: .*generate"):
        resolve_stage("genrate")


@pytest.mark.parametrize("group,option", group_options())
def test_every_config_option_composes_and_validates(group, option):
    if group == "stage":
        overrides = [f"stage={option}"] + (["train.dataset=tests/fixtures/train_run"] if option == "train" else [])
    elif group == "experiment":
        overrides = ["stage=generate", f"experiment={option}"]
        if option.startswith("paper_"):
            overrides += ["models.base_url=http://127.0.0.1:9/v1"]
    elif group == "pipeline":
        overrides = ["stage=pipeline", f"pipeline={option}"]
    elif group == "train":
        overrides = ["stage=train", f"train={option}", "train.dataset=tests/fixtures/train_run"]
    elif group == "judges" and option == "screen":
        # The screen role: the GRPO reward asks it about each answer before the judge
        overrides = ["stage=train", "+judges=screen", "train.dataset=tests/fixtures/train_run"]
    elif group == "judges":
        # A further judge role, graded with beside the primary judge
        overrides = ["stage=eval", f"+judges={option}", f"eval.judges=[judge,judge_{option}]",
                     f"models.roles.judge_{option}.base_url=http://127.0.0.1:9/v1"]
    else:
        overrides = ["stage=generate", f"{group}={option}"]
    if group == "models" and option in ("openai", "paper"):
        overrides += ["models.base_url=http://127.0.0.1:9/v1", "models.model=test-model"]
    if group == "corpus" and option in ("folder", "jsonl", "parquet", "hf"):
        overrides += ["corpus.path=tests/fixtures/legal"]
    cfg = compose_typed(overrides)
    validate(cfg)


def test_defaults_come_from_the_dataclasses():
    cfg = compose_typed(["stage=generate"])
    assert cfg.domain.acceptance.strong_min == 0.65
    assert cfg.domain.acceptance.weak_max == 0.50
    assert cfg.domain.acceptance.min_gap == 0.20
    assert cfg.method.name == "agentic"
    for role in ROLES:
        assert endpoint_for(cfg.models, role).model == "embedded"


def test_one_override_points_every_role_at_one_server():
    cfg = compose_typed(["stage=generate", "models=openai", "models.base_url=http://h:8000/v1", "models.model=m"])
    for role in ROLES:
        ep = endpoint_for(cfg.models, role)
        assert (ep.backend, ep.model, ep.base_urls) == ("openai", "m", ["http://h:8000/v1"])


def test_per_role_override_wins():
    cfg = compose_typed(["stage=generate", "models=openai", "models.base_url=http://h:8000/v1", "models.model=m",
                         "models.roles.strong_solver.base_url=http://big:8000/v1",
                         "models.roles.strong_solver.model=big"])
    strong = endpoint_for(cfg.models, "strong_solver")
    weak = endpoint_for(cfg.models, "weak_solver")
    assert (strong.model, strong.base_urls) == ("big", ["http://big:8000/v1"])
    assert (weak.model, weak.base_urls) == ("m", ["http://h:8000/v1"])


def test_impossible_config_lists_every_problem():
    cfg = compose_typed(["stage=generate", "domain.acceptance.strong_min=0.4", "domain.acceptance.weak_max=0.5",
                         "generate.weak_samples=0", "models=openai"])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert "domain.acceptance.strong_min (0.4) must be >= domain.acceptance.weak_max (0.5)" in text
    assert "raise strong_min or lower weak_max" in text
    assert "generate.weak_samples (0) must be > 0" in text
    assert "base_url" in text and "models.model" in text
    assert len(info.value.problems) >= 4


@pytest.mark.parametrize("script", sorted((ROOT / "slurm").glob("*.sbatch")), ids=lambda p: p.name)
def test_slurm_scripts_parse(script):
    import subprocess

    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_eval_sbatch_overrides_compose_and_validate():
    # The overrides slurm/eval.sbatch adds to the user's, with the judge its usage line names
    cfg = compose_typed(["stage=eval", "models.roles.weak_solver.backend=vllm", "models.roles.weak_solver.dtype=bfloat16",
                         "eval.model=runs/train_cs_agentic/final", "eval.datasets=[runs/cs_cot,runs/cs_agentic]",
                         "models.roles.judge.backend=openai", "models.roles.judge.base_url=https://api.example.com/v1",
                         "models.roles.judge.model=kimi-k2.6"])
    validate(cfg)
