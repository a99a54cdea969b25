"""A stage refuses an input made under another experiment's domain, or data made for another model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from autodata.config import RootConfig, register_configs, to_typed
from eval.sets import EvalDataError
from eval.stage import refuse_foreign_inputs
from training.data import DataError
from training.stage import refuse_foreign_data

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def composed(overrides: list[str]) -> RootConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_typed(compose(config_name="config", overrides=overrides))


def fake_run(folder: Path, *overrides: str) -> Path:
    """A run dir as run.py leaves it: the resolved config and run_info.json."""
    folder.mkdir(parents=True)
    cfg = composed(list(overrides))
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    (folder / "run_info.json").write_text(json.dumps({"starts": [{}]}))
    return folder


def test_training_on_data_of_another_domain_or_model_is_refused(tmp_path):
    legal = fake_run(tmp_path / "legal_run", "stage=generate", "domain=legal")
    with pytest.raises(DataError) as info:
        refuse_foreign_data(composed(["stage=train", f"train.dataset={legal}/train.jsonl"]))
    assert "domain.name is 'legal' there and 'cs' here" in str(info.value)
    assert "check_inputs=false" in str(info.value)
    other_model = fake_run(tmp_path / "qwen_run", "stage=generate", "models.roles.weak_solver.model=Qwen/Qwen3.5-4B")
    with pytest.raises(DataError, match="made for weak solver 'Qwen/Qwen3.5-4B', and this run trains 'embedded'"):
        refuse_foreign_data(composed(["stage=train", f"train.dataset={other_model}"]))
    refuse_foreign_data(composed(["stage=train", f"train.dataset={other_model}", "check_inputs=false"]))


def test_data_of_this_experiment_and_hand_made_data_pass(tmp_path):
    ours = fake_run(tmp_path / "ours", "stage=generate")
    refuse_foreign_data(composed(["stage=train", f"train.dataset=[{ours},tests/fixtures/train_run]"]))


def test_eval_refuses_a_set_or_model_from_another_domain(tmp_path):
    legal = fake_run(tmp_path / "legal_run", "stage=generate", "domain=legal")
    trained = fake_run(tmp_path / "train_legal", "stage=train", "domain=legal")
    cfg = composed(["stage=eval", f"eval.datasets=['held=tests/fixtures/train_run+{legal}']",
                    f"eval.model={trained}/final"])
    (trained / "final").mkdir()
    with pytest.raises(EvalDataError) as info:
        refuse_foreign_inputs(cfg)
    text = str(info.value)
    assert f"eval.datasets: {legal}: domain.name is 'legal' there and 'cs' here" in text
    assert f"eval.model: {trained}/final: domain.name is 'legal'" in text
    refuse_foreign_inputs(composed(["stage=eval", "domain=legal", f"eval.datasets=[{legal}]",
                                    f"eval.model={trained}/final"]))
