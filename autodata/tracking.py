"""W&B runs for every stage (``logger=wandb``): one run per run dir, offline unless WANDB_MODE says otherwise.

The run id is kept in ``wandb_id.txt`` in the run dir, so a resumed stage
continues the same W&B run instead of starting a second one. ``WANDB_PROJECT``
names the project (default ``autodata``); ``wandb sync RUN_DIR/wandb/offline-run-*``
uploads an offline run.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from autodata.config import RootConfig

ID_FILE = "wandb_id.txt"


def start_wandb(cfg: RootConfig, run_dir: Path, job_type: str) -> Optional[Any]:
    """The stage's W&B run, or None when ``logger`` is not wandb."""
    if cfg.logger != "wandb":
        return None
    import wandb
    from omegaconf import OmegaConf

    os.environ.setdefault("WANDB_MODE", "offline")
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file = run_dir / ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id)
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "autodata"), dir=str(run_dir), name=run_dir.name,
                      id=run_id, job_type=job_type, resume="allow",
                      config=OmegaConf.to_container(OmegaConf.structured(cfg)))


def flatten(prefix: str, values: dict[str, Any]) -> Iterable[tuple[str, float]]:
    """Numeric leaves of a nested dict as ``prefix/a/b`` keys; an estimate dict gives its value and stderr.

    >>> dict(flatten("eval", {"cs": {"mean_at_3": {"value": 0.5, "stderr": 0.1, "n": 4}, "path": "x"}}))
    {'eval/cs/mean_at_3': 0.5, 'eval/cs/mean_at_3_stderr': 0.1, 'eval/cs/mean_at_3_n': 4}
    """
    for key, value in values.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict) and "value" in value:
            if value["value"] is not None:
                yield name, value["value"]
            for extra, v in value.items():
                if extra != "value" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    yield f"{name}_{extra}", v
        elif isinstance(value, dict):
            yield from flatten(name, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, value
