"""The stage registry: one name -> one ``run(cfg: RootConfig, run_dir: Path) -> None``, with what it reads.

Targets are import strings so a stage's heavy imports (torch, TRL, vLLM) load
only when that stage runs. The registry is also the CLI's list of stages
(``autodata --help``) and says which config groups each stage reads: its recipe
lists only those at start (recipe.json keeps every value).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

# Read by every stage: the experiment, how the recipe is shown, and the root's own keys (logger, progress,
# check_inputs), which belong to no group.
COMMON_GROUPS = ("experiment", "recipe")


@dataclass(frozen=True)
class Stage:
    # "module:function", imported when the stage runs
    target: str
    # One line for `autodata --help`
    summary: str
    # The config groups the stage reads (besides COMMON_GROUPS); None: every group (the pipeline hands all of
    # them to its steps)
    reads: Optional[tuple[str, ...]]


STAGES: dict[str, Stage] = {
    "generate": Stage("autodata.generate.stage:run",
                      "make a dataset: challenger, verifier, solvers and judge per document",
                      ("models", "corpus", "domain", "method", "generate", "cache")),
    "merge": Stage("autodata.generate.merge:run", "join the shard run dirs of one sharded generate into one run dir",
                   ("merge", "generate")),
    "train": Stage("training.stage:run", "GRPO on a generate run's accepted examples, rewarded by the rubric judge",
                   ("train", "models", "domain", "cache")),
    "eval": Stage("eval.stage:run", "answer held-out sets with a model and grade them: mean@k, best@k, truncation",
                  ("eval", "models", "domain", "cache")),
    "report": Stage("eval.report:run", "put eval runs' numbers beside the paper's tables", ("report",)),
    "pipeline": Stage("autodata.pipeline:run", "every step of an experiment's table, each in its own run dir", None),
    "meta_optimize": Stage("autodata.meta.stage:run", "evolve the domain's prompt templates on a validation split",
                           ("meta", "models", "corpus", "domain", "method", "generate", "cache")),
    "plan": Stage("autodata.plan:run", "calls, tokens, GPU-hours and fleet size for a target; calls no endpoint",
                  ("plan", "models", "domain", "method", "generate")),
}


class UnknownStage(ValueError):
    pass


def resolve_stage(name: str) -> Callable[..., None]:
    stage = STAGES.get(name)
    if stage is None:
        known = ", ".join(sorted(STAGES))
        raise UnknownStage(f"unknown stage {name!r}; known stages: {known} (run: autodata stage=<name>; "
                           "autodata --help lists them)")
    module_name, func_name = stage.target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def reads(stage: str, key: str) -> bool:
    """Whether ``stage`` reads the dotted config ``key``: a root key, a common group, or one of the stage's groups.

    >>> reads("generate", "generate.max_rounds"), reads("generate", "train.batch_size"), reads("generate", "logger")
    (True, False, True)
    >>> reads("pipeline", "train.batch_size"), reads("nonesuch", "train.batch_size")
    (True, True)
    """
    group, dot, _ = key.partition(".")
    known = STAGES.get(stage)
    if not dot or group in COMMON_GROUPS or known is None or known.reads is None:
        return True
    return group in known.reads


def stage_config_names(conf_dir: Path) -> set[str]:
    return {p.stem for p in (conf_dir / "stage").glob("*.yaml")}
