"""Input checks of the train stage (``stage=train``), beside it: the rules that need no file or process.

Light on purpose: validation imports this module for every ``stage=train`` start, before torch or TRL load; the
installed TRL's GRPOConfig fields are read only when a ``train.grpo`` key is none of the stage's own.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable, Mapping, Optional

from autodata import grpo
from autodata.config import SCREEN_ROLE, RootConfig, TrainConfig, has_screen
from autodata.domains import DOMAINS
from autodata.reasoning import TEMPLATE_SWITCH
from autodata.tracking import LOGGERS
from autodata.validation import (
    Problem,
    check_models,
    check_templates,
    require_choice,
    require_positive,
)

# TRL's own choices, checked here so a typo fails before the model loads
KNOWN_BATCH_UNITS = ("prompts", "completions")
KNOWN_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
KNOWN_REWARD_SCALING = ("group", "batch", "none")
KNOWN_VLLM_MODES = ("colocate", "server")


def check_train(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """Rules of stage=train that need no file or process: the data and the world size are checked at start."""
    problems: list[Problem] = []
    t = cfg.train
    require_choice(problems, "domain.name", cfg.domain.name, tuple(sorted(DOMAINS)))
    require_choice(problems, "logger", cfg.logger, tuple(LOGGERS))
    if TEMPLATE_SWITCH in (t.chat_template_kwargs or {}):
        problems.append(Problem(f"train.chat_template_kwargs.{TEMPLATE_SWITCH}", t.chat_template_kwargs[TEMPLATE_SWITCH],
                                "is a second thinking switch: the trained model is the weak solver, whose reasoning "
                                "mode is models.roles.weak_solver.thinking (the same in generate, train and eval)",
                                "remove it and set models.roles.weak_solver.thinking"))
    paths = [t.dataset] if isinstance(t.dataset, str) else t.dataset
    if not paths or not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        problems.append(Problem(
            "train.dataset", t.dataset, "must name a generate run's output (a path, or a list of paths)",
            "set train.dataset=runs/<generate run>/accepted.jsonl, or train.dataset='[RUN_A,RUN_B]' for the combined "
            "arm (python -m autodata.run stage=generate hydra.run.dir=runs/<name> makes one)",
        ))
    if not t.model:
        problems.append(Problem("train.model", t.model, "must name the policy", "set train.model to a hub id, a "
                                "checkpoint dir or embedded"))
    require_choice(problems, "train.batch_unit", t.batch_unit, KNOWN_BATCH_UNITS)
    require_choice(problems, "train.loss_type", t.loss_type, KNOWN_LOSS_TYPES)
    require_choice(problems, "train.scale_rewards", t.scale_rewards, KNOWN_REWARD_SCALING)
    for key in ("batch_size", "per_device_batch_size", "learning_rate", "epochs", "max_completion_length",
                "num_iterations", "save_steps", "save_total_limit", "logging_steps"):
        require_positive(problems, f"train.{key}", getattr(t, key))
    require_positive(problems, "train.judge_down_batches", t.judge_down_batches, allow_zero=True)
    failure = t.judge_failure_reward
    if failure is not None and (isinstance(failure, bool) or not isinstance(failure, (int, float))
                                or not 0.0 <= failure <= 1.0):
        problems.append(Problem(
            "train.judge_failure_reward", failure,
            "must lie in [0, 1] like every judge reward, or be null (TRL then leaves the completion out)",
            "set train.judge_failure_reward=0.0 (the policy gains nothing by making the judge fail) or =null"))
    if not isinstance(t.hacking_alert_window, int) or isinstance(t.hacking_alert_window, bool) \
            or t.hacking_alert_window < 1:
        problems.append(Problem("train.hacking_alert_window", t.hacking_alert_window, "must be an integer >= 1 (steps "
                                "in the rolling mean)", "set train.hacking_alert_window=5, or 1 for no smoothing"))
    for key, low in (("guard_share", 0.0), ("screen_share", 0.0), ("judge_failure_share", 0.0),
                     ("truncation_share", 0.0), ("length_corr", -1.0)):
        value = getattr(t, f"hacking_alert_{key}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not low <= value <= 1.0):
            problems.append(Problem(f"train.hacking_alert_{key}", value, f"must lie in [{low:g}, 1] like the metric "
                                    "it watches, or be null (no alert for it)",
                                    f"set train.hacking_alert_{key} in [{low:g}, 1] or =null"))
    require_positive(problems, "train.beta", t.beta, allow_zero=True)
    require_positive(problems, "train.epsilon", t.epsilon)
    if t.max_steps is not None:
        require_positive(problems, "train.max_steps", t.max_steps)
    if not isinstance(t.group_size, int) or t.group_size < 2:
        problems.append(Problem("train.group_size", t.group_size,
                                "must be >= 2 (GRPO's advantage compares completions of one prompt)",
                                "set train.group_size to 2 or more (paper: 8)"))
    elif t.batch_unit == "completions" and isinstance(t.batch_size, int) and t.batch_size % t.group_size:
        problems.append(Problem(
            "train.batch_size", t.batch_size,
            f"must be divisible by train.group_size ({t.group_size}) when train.batch_unit=completions, or a step "
            "would hold a partial group",
            f"set train.batch_size to a multiple of {t.group_size}, or count prompts with train.batch_unit=prompts",
        ))
    elif (t.batch_unit in KNOWN_BATCH_UNITS and isinstance(t.per_device_batch_size, int) and t.per_device_batch_size > 0
          and t.batch_size > 0 and t.completions_per_step % t.per_device_batch_size):
        problems.append(Problem(
            "train.per_device_batch_size", t.per_device_batch_size,
            f"must divide the completions per step ({t.completions_per_step} = train.batch_size x train.group_size)",
            "pick a divisor; gradient accumulation makes up the rest",
        ))
    if not 0.0 < float(t.temperature) <= 2.0:
        problems.append(Problem("train.temperature", t.temperature, "must lie in (0, 2]",
                                "set a sampling temperature in (0, 2] (paper: 1.0)"))
    if not 0.0 < float(t.top_p) <= 1.0:
        problems.append(Problem("train.top_p", t.top_p, "must lie in (0, 1]", "set train.top_p in (0, 1]"))
    v = t.vllm
    if v.enabled:
        require_choice(problems, "train.vllm.mode", v.mode, KNOWN_VLLM_MODES)
        if v.mode == "server" and not v.server_base_url:
            problems.append(Problem("train.vllm.server_base_url", v.server_base_url, "is required in server mode",
                                    "start `trl vllm-serve --model MODEL` on a spare GPU and set "
                                    "train.vllm.server_base_url=http://HOST:8000"))
        if not 0.0 < float(v.gpu_memory_utilization) < 1.0:
            problems.append(Problem("train.vllm.gpu_memory_utilization", v.gpu_memory_utilization, "must lie in (0, 1)",
                                    "leave room for training, e.g. 0.3"))
    if t.lora.enabled:
        require_positive(problems, "train.lora.r", t.lora.r)
        require_positive(problems, "train.lora.alpha", t.lora.alpha)
        if not t.lora.target_modules:
            problems.append(Problem("train.lora.target_modules", t.lora.target_modules, "must not be empty",
                                    "name the modules to adapt, or [all-linear]"))
    problems.extend(check_grpo(t))
    problems.extend(check_templates(cfg))
    # Training calls the reward judge, and the screen when it is declared.
    problems.extend(check_models(cfg, roles=("judge", SCREEN_ROLE) if has_screen(cfg.models) else ("judge",), env=env))
    return problems


def check_grpo(t: TrainConfig, fields: Optional[Callable[[], list[str]]] = None) -> list[Problem]:
    """Each train.grpo key must be a GRPOConfig field no setting already sets; TRL's name of a renamed setting
    must agree with it. ``fields`` lists GRPOConfig's fields (default: the installed TRL's, imported only when a
    key is none of the stage's)."""
    problems: list[Problem] = []
    unknown = []
    for key, value in t.grpo.items():
        where = f"train.grpo.{key}"
        if key in grpo.ALIASES:
            path = grpo.ALIASES[key]
            if grpo.setting(t, path) != value:
                problems.append(Problem(where, value, f"is TRL's name for train.{path}, which is "
                                        f"{grpo.setting(t, path)!r} here: two values for one setting",
                                        f"keep one: drop {where}, or set train.{path}={value} in its place"))
        elif key in grpo.SETTINGS:
            problems.append(Problem(where, value, f"duplicates the setting train.{key}",
                                    f"set train.{key}={value} instead"))
        elif key in grpo.STAGE_SET:
            problems.append(Problem(where, value, f"is set by the stage from {grpo.STAGE_SET[key]}",
                                    "drop it and change that instead"))
        else:
            unknown.append((key, value))
    if unknown:
        known = (fields or grpo.config_fields)()
        for key, value in unknown:
            if key in known:
                continue
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            named = key in {f.name for f in dataclasses.fields(TrainConfig)}
            fix = (f"set train.{key} (a train setting, not a GRPOConfig field)" if named
                   else f"did you mean train.grpo.{near[0]}?" if near
                   else "use a field name of TRL's GRPOConfig (python -c \"from trl import GRPOConfig; "
                        "help(GRPOConfig)\")")
            problems.append(Problem(f"train.grpo.{key}", value, "is not a field of TRL's GRPOConfig", fix))
    return problems
