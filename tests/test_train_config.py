"""stage=train configuration: defaults, presets, the batch mapping onto TRL, and the GPU launch files
(accelerate and DeepSpeed configs parsed by accelerate itself)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata.config import RootConfig, endpoint_for, register_configs, to_typed
from autodata.validation import ConfigError, validate
from training.stage import BatchPlan, TrainAborted, batch_plan, grpo_config, lora_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# accelerate's and DeepSpeed's launch files: outside conf/, Hydra's search path
LAUNCH = ROOT / "launch"
DATA = "train.dataset=tests/fixtures/train_run"
register_configs()


def compose_typed(overrides: list[str]) -> RootConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_typed(compose(config_name="config", overrides=overrides))


def problems(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        validate(compose_typed(["stage=train", *overrides]))
    return str(info.value)


def test_module_doctests():
    import doctest

    from training import outputs, stage

    for module in (stage, outputs):
        assert doctest.testmod(module).failed == 0


def test_paper_defaults_live_in_the_dataclass():
    # ~experiment: no experiment at all, so every value is the dataclass's
    t = compose_typed(["stage=train", "~experiment", DATA]).train
    assert (t.model, t.batch_size, t.batch_unit, t.group_size) == ("Qwen/Qwen3.5-4B", 16, "prompts", 8)
    assert (t.learning_rate, t.temperature, t.epochs) == (1e-6, 1.0, 1.0)
    assert t.completions_per_step == 128
    assert t.bf16 is None and t.gradient_checkpointing is None  # on with CUDA, off on CPU


def test_presets_only_change_what_differs():
    science = compose_typed(["stage=train", "train=paper_science", DATA]).train
    assert (science.batch_size, science.group_size, science.max_completion_length) == (64, 8, 65536)
    assert science.vllm.enabled and science.vllm.mode == "colocate"
    cs = compose_typed(["stage=train", "train=paper_cs", DATA]).train
    assert cs.vllm.enabled and cs.batch_size == 16 and cs.learning_rate == 1e-6
    smoke = compose_typed(["stage=train", "experiment=smoke"])
    assert smoke.train.model == "embedded" and smoke.train.max_steps == 2
    assert smoke.train.dataset == "tests/fixtures/train_run"
    assert endpoint_for(smoke.models, "judge").model == "embedded"
    validate(smoke)


def test_the_judge_moves_with_the_models_group():
    cfg = compose_typed(["stage=train", DATA, "models=openai", "models.base_url=http://judge:8000/v1",
                         "models.model=kimi"])
    ep = endpoint_for(cfg.models, "judge")
    assert (ep.backend, ep.model, ep.base_urls, ep.temperature) == ("openai", "kimi", ["http://judge:8000/v1"], 0.0)


def test_only_the_judge_endpoint_matters_for_training():
    cfg = compose_typed(["stage=train", DATA, "models=openai", "models.roles.judge.base_url=http://judge:8000/v1",
                         "models.roles.judge.model=kimi"])
    validate(cfg)  # the generate roles have no URL, and training never calls them
    text = problems([DATA, "models=openai", "models.model=kimi"])
    assert "models.roles.judge.base_url (None) is required for the openai backend" in text
    assert "weak_solver" not in text


def test_the_combined_arm_is_one_override():
    cfg = compose_typed(["stage=train", "train.dataset=[runs/cs_cot,runs/cs_agentic]"])
    assert cfg.train.dataset == ["runs/cs_cot", "runs/cs_agentic"]
    validate(cfg)


def test_batch_size_not_divisible_by_the_group_size():
    text = problems([DATA, "train.batch_unit=completions", "train.batch_size=12", "train.group_size=8"])
    assert "train.batch_size (12) must be divisible by train.group_size (8)" in text
    assert "set train.batch_size to a multiple of 8" in text


def test_every_problem_in_one_error():
    text = problems(["train.group_size=1", "train.learning_rate=0", "train.loss_type=ppo",
                     "train.vllm.enabled=true", "train.vllm.mode=server"])
    for expected in ("train.dataset (None) must name a generate run's output", "train.group_size (1) must be >= 2",
                     "train.learning_rate (0.0) must be > 0", "train.loss_type ('ppo') must be one of",
                     "train.vllm.server_base_url (None) is required in server mode"):
        assert expected in text


def test_per_device_batch_must_divide_a_step():
    text = problems([DATA, "train.per_device_batch_size=48"])
    assert "train.per_device_batch_size (48) must divide the completions per step (128" in text


def test_batch_plan_maps_the_paper_batch_onto_trl():
    t = compose_typed(["stage=train", DATA]).train
    assert batch_plan(t, 1) == BatchPlan(16, 128, 8, 1, 16)
    assert batch_plan(t, 8) == BatchPlan(16, 128, 8, 8, 2)
    with pytest.raises(TrainAborted, match="on 32 processes"):
        batch_plan(t, 32)


def test_grpo_config_carries_the_mapping(tmp_path):
    cfg = compose_typed(["stage=train", "train=paper_science", DATA, "train.beta=0.001",
                         "train.scale_rewards=none", "train.loss_type=dr_grpo"])
    plan = batch_plan(cfg.train, 1)
    args = grpo_config(cfg, tmp_path, plan, cuda=False)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 512
    assert args.generation_batch_size == 512 and args.num_generations == 8
    assert (args.beta, args.scale_rewards, args.loss_type) == (0.001, "none", "dr_grpo")
    assert args.max_completion_length == 65536 and args.use_vllm and args.vllm_mode == "colocate"
    assert args.vllm_max_model_length == 69632
    assert not args.bf16 and not args.gradient_checkpointing  # CPU
    assert args.output_dir == str(tmp_path / "checkpoints")


def test_vllm_server_mode_reaches_trl(tmp_path):
    cfg = compose_typed(["stage=train", DATA, "train.vllm.enabled=true", "train.vllm.mode=server",
                         "train.vllm.server_base_url=http://node7:8000"])
    validate(cfg)
    args = grpo_config(cfg, tmp_path, batch_plan(cfg.train, 1), cuda=False)
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (True, "server", "http://node7:8000")


def test_lora_is_optional():
    assert lora_config(compose_typed(["stage=train", DATA]).train) is None
    lora = lora_config(compose_typed(["stage=train", DATA, "train.lora.enabled=true", "train.lora.r=8"]).train)
    assert (lora.r, lora.lora_alpha, lora.target_modules) == (8, 32, "all-linear")


@pytest.mark.parametrize("name", ["multi_gpu", "zero3"])
def test_accelerate_configs_pass_accelerates_own_launch_validation(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = LAUNCH / "accelerate" / f"{name}.yaml"
    assert path.read_text().startswith("# accelerate launch --config_file launch/accelerate/")
    config = load_config_from_file(str(path))
    assert config.num_processes == 8
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "autodata.run", "stage=train"])
    args, defaults, _ = _validate_launch_command(args)
    assert args.num_processes == 8 and args.module
    if name == "zero3":
        assert args.use_deepspeed and args.deepspeed_config_file == "launch/deepspeed/zero3.json"
        assert args.zero3_init_flag
    else:
        assert args.multi_gpu and args.mixed_precision == "bf16"


def test_the_deepspeed_config_is_zero3_as_accelerate_reads_it(monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.deepspeed import HfDeepSpeedConfig
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    raw = json.loads((LAUNCH / "deepspeed" / "zero3.json").read_text())
    # Batch and precision are left to the training arguments ("auto"), so the batch mapping has one source.
    assert raw["train_micro_batch_size_per_gpu"] == raw["gradient_accumulation_steps"] == "auto"
    assert HfDeepSpeedConfig(str(LAUNCH / "deepspeed" / "zero3.json")).is_zero3()

    monkeypatch.chdir(ROOT)
    args = launch_command_parser().parse_args(["--config_file", "launch/accelerate/zero3.yaml", "-m", "autodata.run"])
    args, defaults, mixed_precision_set = _validate_launch_command(args)
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_set else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()  # what the training processes build from that environment
    assert plugin.zero_stage == 3 and plugin.zero3_init_flag


@pytest.mark.parametrize("path", [*sorted((CONF / "train").glob("*.yaml")), CONF / "stage" / "train.yaml"],
                         ids=lambda p: p.name)
def test_every_launchable_train_file_opens_with_its_command(path):
    lines = path.read_text().splitlines()
    command = lines[1] if lines[0].startswith("# @package") else lines[0]
    assert command.startswith("# ") and "autodata.run stage=train" in command
    if path.parent.name == "train":
        # The option itself, or the experiment that selects it with its models and domain
        experiment = re.search(r"experiment=(\w+)", command)
        selects = experiment and f"override /train: {path.stem}" in (CONF / "experiment" / f"{experiment.group(1)}.yaml").read_text()
        assert f"train={path.stem}" in command or selects


@pytest.mark.gpu
def test_bf16_and_gradient_checkpointing_follow_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cfg = compose_typed(["stage=train", DATA])
    args = grpo_config(cfg, tmp_path, batch_plan(cfg.train, 1), cuda=True)
    assert args.bf16 and args.gradient_checkpointing
