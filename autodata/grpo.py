"""TRL's ``GRPOConfig`` seen from ``train.*``: which setting passes which field, and ``train.grpo``, the rest.

``SETTINGS`` is the one table of GRPOConfig fields the train stage copies from a named setting;
``training/stage.py`` (grpo_kwargs) passes them from it. It also yields the aliases: where TRL's name differs
from the setting's (``num_generations`` -> ``train.group_size``), TRL's name in ``train.grpo`` sets the setting.
``STAGE_SET`` names the fields the stage derives or fixes, with what decides each. Every other GRPOConfig field
may be given in ``train.grpo`` and is passed as is (``+train.grpo.epsilon_high=0.28 +train.grpo.max_grad_norm=1.0``);
validation (training/checks.py, check_train) checks each key against the installed TRL's GRPOConfig.

Kept in autodata/, not training/, because the shared config and provenance read it too and autodata imports no
stage.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# GRPOConfig field -> the train setting (a path under train.) whose value it takes unchanged
SETTINGS: dict[str, str] = {
    "seed": "seed",
    "per_device_train_batch_size": "per_device_batch_size",
    "num_generations": "group_size",
    "learning_rate": "learning_rate",
    "lr_scheduler_type": "lr_scheduler_type",
    "num_train_epochs": "epochs",
    "temperature": "temperature",
    "top_p": "top_p",
    "max_completion_length": "max_completion_length",
    "beta": "beta",
    "loss_type": "loss_type",
    "scale_rewards": "scale_rewards",
    "mask_truncated_completions": "mask_truncated_completions",
    "num_iterations": "num_iterations",
    "epsilon": "epsilon",
    "use_vllm": "vllm.enabled",
    "vllm_mode": "vllm.mode",
    "vllm_server_base_url": "vllm.server_base_url",
    "vllm_server_timeout": "vllm.server_timeout_s",
    "vllm_gpu_memory_utilization": "vllm.gpu_memory_utilization",
    "vllm_tensor_parallel_size": "vllm.tensor_parallel_size",
    "vllm_enable_sleep_mode": "vllm.enable_sleep_mode",
    "vllm_max_model_length": "vllm.max_model_length",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "logging_steps": "logging_steps",
    "log_completions": "log_completions",
}

# TRL's name -> the renamed setting it stands for in train.grpo (a field of the same name is a duplicate, refused)
ALIASES: dict[str, str] = {name: setting for name, setting in SETTINGS.items() if name != setting}

# GRPOConfig fields the stage derives or fixes -> what decides them (refused in train.grpo)
STAGE_SET: dict[str, str] = {
    "output_dir": "hydra.run.dir (checkpoints go to <run dir>/checkpoints)",
    "run_name": "experiment.name and the stage (the W&B run name)",
    "use_cpu": "the hardware (on when torch sees no CUDA)",
    "bf16": "train.bf16",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "gradient_accumulation_steps": "train.batch_size, train.group_size, train.per_device_batch_size and the number "
                                   "of processes (one generation batch = one optimizer step)",
    "max_steps": "train.max_steps",
    "chat_template_kwargs": "train.chat_template_kwargs and models.roles.weak_solver.thinking",
    "save_strategy": "train.save_steps (checkpoints every N steps, which train.resume needs)",
    "num_completions_to_print": "train.log_completions (the stage prints 4)",
    "report_to": "logger",
    "disable_tqdm": "progress",
}


def setting(train: Any, path: str) -> Any:
    """The value of a train setting given by its path under ``train.``."""
    for part in path.split("."):
        train = getattr(train, part)
    return train


def setting_default(train: Any, path: str) -> Any:
    """The dataclass default of a scalar setting (class attributes hold them), without building a new config."""
    *parents, name = path.split(".")
    for part in parents:
        train = getattr(train, part)
    return getattr(type(train), name)


def apply_aliases(train: Any) -> None:
    """Set each renamed setting that ``train.grpo`` gives under TRL's name, where the setting is still at its
    default; a setting set elsewhere to another value is left for validation to refuse (one of the two must go).

    >>> from autodata.config import TrainConfig
    >>> TrainConfig(grpo={"num_generations": 4, "epsilon_high": 0.28}).group_size
    4
    >>> TrainConfig(group_size=16, grpo={"num_generations": 4}).group_size
    16
    """
    for name, path in ALIASES.items():
        if name in train.grpo and setting(train, path) == setting_default(train, path):
            *parents, attr = path.split(".")
            owner = setting(train, ".".join(parents)) if parents else train
            setattr(owner, attr, train.grpo[name])


def passed_through(grpo: dict[str, Any]) -> dict[str, Any]:
    """The ``train.grpo`` entries GRPOConfig receives as given: all but aliases and fields the stage sets."""
    return {k: v for k, v in grpo.items() if k not in SETTINGS and k not in STAGE_SET}


def config_fields() -> list[str]:
    """The installed TRL's GRPOConfig field names (imports TRL: a few seconds; called only when train.grpo is set)."""
    from trl import GRPOConfig

    return [f.name for f in dataclasses.fields(GRPOConfig) if f.init]
