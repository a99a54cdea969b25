"""The stage registry: one name -> one ``run(cfg: RootConfig, run_dir: Path) -> None``.

Targets are import strings so a stage's heavy imports (torch, TRL, vLLM) load
only when that stage runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

STAGES: dict[str, str] = {
    "generate": "autodata.generate.stage:run",
    "merge": "autodata.generate.merge:run",
    "train": "training.stage:run",
    "eval": "eval.stage:run",
    "report": "eval.report:run",
    "pipeline": "autodata.pipeline:run",
    "meta_optimize": "autodata.meta.stage:run",
    "plan": "autodata.plan:run",
}


class UnknownStage(ValueError):
    pass


def resolve_stage(name: str) -> Callable[..., None]:
    target = STAGES.get(name)
    if target is None:
        known = ", ".join(sorted(STAGES))
        raise UnknownStage(f"unknown stage {name!r}; known stages: {known} (run: python -m autodata.run stage=<name>)")
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def stage_config_names(conf_dir: Path) -> set[str]:
    return {p.stem for p in (conf_dir / "stage").glob("*.yaml")}
