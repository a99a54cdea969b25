"""The stage registry: one name -> one ``run(cfg: RootConfig, run_dir: Path) -> None``, with what it reads.

Targets are import strings so a stage's heavy imports (torch, TRL, vLLM) load
only when that stage runs. The registry is also the CLI's list of stages
(``autodata --help``) and says which config groups each stage reads: its recipe
lists only those at start (recipe.json keeps every value).

A stage's code is the package its entry names (``package``); everything else under ``autodata/`` is the shared
layer, which imports no stage, and a stage imports another stage only through that package's ``__init__``
(tests/test_layering.py holds the code to this). A stage's input checks live beside it (``checks``), and
validation finds them here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from autodata.errors import UnknownName, lookup

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
    # The package (or single module) that holds the stage's code; stages may share one (generate and merge)
    package: str
    # "module:function" of the stage's input checks, ``check(cfg, env) -> list[Problem]``; validate() calls it
    checks: str


STAGES: dict[str, Stage] = {
    "generate": Stage("autodata.generate.stage:run",
                      "make a dataset: challenger, verifier, solvers and judge per document",
                      ("models", "corpus", "domain", "method", "generate", "cache"),
                      "autodata.generate", "autodata.generate.checks:check_generate"),
    "merge": Stage("autodata.generate.merge:run", "join the shard run dirs of one sharded generate into one run dir",
                   ("merge", "generate"), "autodata.generate", "autodata.generate.checks:check_merge"),
    "train": Stage("training.stage:run", "GRPO on a generate run's accepted examples, rewarded by the rubric judge",
                   ("train", "models", "domain", "cache"), "training", "training.checks:check_train"),
    "eval": Stage("eval.stage:run", "answer held-out sets with a model and grade them: mean@k, best@k, truncation",
                  ("eval", "models", "domain", "cache"), "eval", "eval.checks:check_eval"),
    "report": Stage("eval.report:run", "put eval runs' numbers beside the paper's tables", ("report",), "eval",
                    "eval.checks:check_report"),
    "pipeline": Stage("autodata.pipeline:run", "every step of an experiment's table, each in its own run dir", None,
                      "autodata.pipeline", "autodata.pipeline.checks:check_pipeline"),
    "meta_optimize": Stage("autodata.meta.stage:run", "evolve the domain's prompt templates on a validation split",
                           ("meta", "models", "corpus", "domain", "method", "generate", "cache"), "autodata.meta",
                           "autodata.meta.checks:check_meta"),
    "plan": Stage("autodata.plan:run", "calls, tokens, GPU-hours and fleet size for a target; calls no endpoint",
                  ("plan", "models", "domain", "method", "generate"), "autodata.plan", "autodata.plan:check_plan"),
}


class UnknownStage(UnknownName):
    pass


def resolve(target: str) -> Callable[..., Any]:
    """The function a ``"module:function"`` import string names, imported now."""
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def resolve_stage(name: str) -> Callable[..., None]:
    stage = lookup(STAGES, name, "stage", hint="run autodata stage=<name>; autodata --help lists them",
                   error=UnknownStage)
    return resolve(stage.target)


def resolve_checks(name: str) -> Callable[..., list]:
    """The input checks of stage ``name``: ``check(cfg, env) -> list[Problem]``."""
    return resolve(lookup(STAGES, name, "stage", error=UnknownStage).checks)


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
