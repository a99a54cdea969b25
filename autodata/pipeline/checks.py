"""The input checks of stage=pipeline: how it launches its steps. Each step checks its own config when it starts.

    python -m autodata.run stage=pipeline experiment=paper_cs pipeline.launcher=slurm pipeline.dry_run=true
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional

from autodata.config import RootConfig
from autodata.errors import Problem
from autodata.pipeline import LAUNCHERS
from autodata.pipeline.slurm import PRESETS
from autodata.validation import require_choice


def check_pipeline(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """How stage=pipeline launches its steps (``env`` is unused; each step checks its own config when it starts)."""
    p, s = cfg.pipeline, cfg.pipeline.slurm
    problems: list[Problem] = []
    require_choice(problems, "pipeline.launcher", p.launcher, tuple(LAUNCHERS))
    if not isinstance(p.shards, int) or p.shards < 1:
        problems.append(Problem("pipeline.shards", p.shards, "must be >= 1",
                                "set pipeline.shards=1 (no sharding) or the number of corpus parts per generate step"))
    if p.launcher != "slurm":
        return problems
    known = sorted(f.stem for f in PRESETS.glob("*.yaml"))
    keys = {*p.steps, *(step.stage for step in p.steps.values()), "merge"}
    named = [("pipeline.slurm.preset", None, s.preset),
             *((f"pipeline.slurm.presets.{k}", k, v) for k, v in s.presets.items())]
    for key, of, name in named:
        if name not in known:
            problems.append(Problem(key, name, f"names no preset in {PRESETS}", f"use one of {', '.join(known)}"))
        if of is not None and of not in keys:
            problems.append(Problem(key, name, "is keyed by neither a step nor a stage of this pipeline (nor merge)",
                                    f"key it by one of {', '.join(sorted(keys))}"))
    for job in s.serve_jobs:
        if not re.fullmatch(r"[0-9]+", str(job)):
            problems.append(Problem("pipeline.slurm.serve_jobs", job, "must be a SLURM job id",
                                    "pass the ids sbatch printed for the servers, e.g. "
                                    "pipeline.slurm.serve_jobs=[1234]"))
    if not Path(s.script).exists():
        problems.append(Problem("pipeline.slurm.script", s.script, "does not exist here (the directory stage=pipeline "
                                "starts in, which is every job's working directory)",
                                "start the pipeline from the repository root, or give the script's absolute path"))
    return problems
