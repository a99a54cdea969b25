"""train.grpo: further GRPOConfig fields passed as given, TRL's names of renamed settings as aliases, and one clear
refusal per key that is unknown or already set by a named setting or the stage."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata import grpo, provenance
from autodata.config import RootConfig, TrainConfig, register_configs, to_typed
from autodata.validation import ConfigError, validate
from training.checks import check_grpo
from training.stage import batch_plan, grpo_config, grpo_kwargs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA = "train.dataset=tests/fixtures/train_run"
register_configs()


def composed(*overrides: str) -> RootConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_typed(compose(config_name="config", overrides=["stage=train", DATA, *overrides]))


def refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        validate(composed(*overrides))
    return str(info.value)


@pytest.fixture(scope="module")
def grpo_fields() -> list[str]:
    return grpo.config_fields()


def test_passed_fields_reach_grpo_config(tmp_path):
    cfg = composed("+train.grpo.epsilon_high=0.28", "+train.grpo.max_grad_norm=0.5")
    validate(cfg)
    args = grpo_config(cfg, tmp_path, batch_plan(cfg.train, 1), cuda=False)
    assert (args.epsilon_high, args.max_grad_norm, args.epsilon) == (0.28, 0.5, 0.2)


def test_an_unknown_key_names_the_closest_field():
    text = refused("+train.grpo.epsilon_hgh=0.28")
    assert "train.grpo.epsilon_hgh (0.28) is not a field of TRL's GRPOConfig; did you mean train.grpo.epsilon_high?" \
        in text
    # One of our own names under train.grpo points at the setting
    assert "set train.lora (a train setting" in refused("+train.grpo.lora=1")


def test_trls_name_of_a_renamed_setting_sets_it(tmp_path):
    cfg = composed("+train.grpo.num_generations=4", "+train.grpo.num_train_epochs=2")
    validate(cfg)
    assert (cfg.train.group_size, cfg.train.epochs) == (4, 2)
    plan = batch_plan(cfg.train, 1)
    assert plan.prompts_per_step == 16 and plan.completions_per_step == 64
    args = grpo_config(cfg, tmp_path, plan, cuda=False)
    assert (args.num_generations, args.num_train_epochs) == (4, 2)
    # The recipe names the entry that set it
    source = {s.key: s.source for s in provenance.effective(cfg, {}, {"train.grpo": "override +train.grpo..."})}
    assert source["train.group_size"].startswith("train.grpo.num_generations (override")


def test_an_alias_and_its_setting_with_two_values_are_refused():
    text = refused("train.group_size=16", "+train.grpo.num_generations=4")
    assert "train.grpo.num_generations (4) is TRL's name for train.group_size, which is 16 here" in text
    assert "keep one" in text
    # The same value twice is one value
    validate(composed("train.group_size=16", "+train.grpo.num_generations=16"))


def test_a_key_a_named_setting_or_the_stage_sets_is_refused_naming_the_setting():
    text = refused("+train.grpo.learning_rate=1e-5", "+train.grpo.output_dir=/tmp/x", "+train.grpo.report_to=wandb")
    assert "train.grpo.learning_rate (1e-05) duplicates the setting train.learning_rate; set " \
           "train.learning_rate=1e-05 instead" in text
    assert "train.grpo.output_dir ('/tmp/x') is set by the stage from hydra.run.dir" in text
    assert "train.grpo.report_to ('wandb') is set by the stage from logger" in text


def test_aliases_need_no_trl_import():
    """Only a key none of the tables knows reads TRL's fields."""
    def no_fields() -> list[str]:
        raise AssertionError("GRPOConfig's fields were read")

    assert check_grpo(TrainConfig(grpo={"num_generations": 8, "seed": 1}), fields=no_fields)[0].key == "train.grpo.seed"


def test_the_tables_cover_what_grpo_kwargs_passes_and_name_real_fields(tmp_path, grpo_fields):
    cfg = composed()
    passed = grpo_kwargs(cfg, tmp_path, batch_plan(cfg.train, 1), cuda=False)
    # Everything grpo_kwargs passes is in exactly one table: no field set in two places
    assert set(passed) == set(grpo.SETTINGS) | set(grpo.STAGE_SET)
    assert not set(grpo.SETTINGS) & set(grpo.STAGE_SET)
    assert sorted(set(passed) - set(grpo_fields)) == []
    for name, path in grpo.SETTINGS.items():
        assert grpo.setting(cfg.train, path) == passed[name], name
    assert grpo.ALIASES["num_generations"] == "group_size" and "learning_rate" not in grpo.ALIASES
    assert {f.name for f in dataclasses.fields(TrainConfig)} >= {p.split(".")[0] for p in grpo.SETTINGS.values()}


def test_check_gpu_deps_sees_passed_through_keys_and_traces_table_rows(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import check_gpu_deps

    cfg = composed("+train.grpo.epsilon_high=0.28")
    assert "epsilon_high" in grpo_kwargs(cfg, tmp_path, batch_plan(cfg.train, 1), cuda=True)
    sites = check_gpu_deps.table_sites()
    assert set(sites) == set(grpo.SETTINGS)
    assert sites["num_generations"].startswith("autodata/grpo.py:") and "train.group_size" in sites["num_generations"]
    problem = check_gpu_deps.missing_names({"epsilon_hi": ["experiment=x cuda=False"]}, {}, sites, {})
    assert "train.grpo (passed through by grpo_kwargs)" in problem[0]


def test_module_doctests():
    import doctest

    from autodata import stages, tracking

    for module in (grpo, stages, tracking):
        assert doctest.testmod(module).failed == 0, module.__name__
