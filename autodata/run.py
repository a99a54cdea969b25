"""The one entry point: ``python -m autodata.run stage=<name> [overrides...]``.

    python -m autodata.run stage=generate                       # embedded model, embedded corpus
    python -m autodata.run stage=generate method=cot            # CoT Self-Instruct baseline
    python -m autodata.run stage=generate models=openai models.base_url=http://localhost:8000/v1 models.model=Qwen/Qwen3.5-4B
    python -m autodata.run stage=generate hydra.run.dir=runs/cs_agentic   # same dir again = resume

The composed config is converted to typed objects and validated once here;
stages receive a ``RootConfig`` and the run dir. A rejected config changes no
file of the run dir (conf/config.yaml keeps Hydra from writing .hydra/ and
delays its log file; config.yaml and recipe.json are written after validation).

One process works in a run dir at a time: a valid start takes the run dir's lock
(``<run dir>/.lock``, autodata/rundir.py ``lock_run_dir``; the ranks of one
torchrun/accelerate launch share it) and a second start on it is refused, naming
the holder, with nothing written.

Exit codes: 0 done; 2 the config, or an input it names (the corpus), cannot be
used, or another process holds the run dir; 3 an endpoint cannot serve (a
stage's own errors, see its module); 4 the generated dataset is written but its
push to the hub failed.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from autodata import recipe, variants
from autodata.config import register_configs, to_typed
from autodata.domains import DOMAINS
from autodata.rundir import RunDirBusy, lock_run_dir, mark_finished, write_provenance
from autodata.stages import resolve_stage
from autodata.validation import ConfigError, InputError, validate

log = logging.getLogger("autodata")

register_configs()
# One INFO line per HTTP request floods the run log at hundreds of requests per second.
for _noisy in ("httpx", "httpx2", "urllib3"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    cfg = to_typed(dcfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        stage = resolve_stage(cfg.stage)
        # A harness variant (domain.variant) sets task-shaping knobs: applied once, before validation sees them
        if cfg.domain.variant and cfg.domain.name in DOMAINS:
            cfg.domain = variants.resolve(cfg.domain, DOMAINS[cfg.domain.name])
        validate(cfg, env=os.environ)
    except (ConfigError, ValueError) as err:
        # To the console only: the run dir of a rejected start (an existing run's, maybe) stays as it was.
        detach_log_files()
        log.error("%s", err)
        sys.exit(2)
    try:
        # Held until this process exits; a stage reads other run dirs (its inputs) without their locks
        lock_run_dir(run_dir)
    except RunDirBusy as err:
        # The run dir's log file is the holder's: the refusal goes to the console only
        detach_log_files()
        log.error("%s", err)
        sys.exit(2)
    write_provenance(cfg, run_dir, overrides=list(HydraConfig.get().overrides.task))
    recipe.report(cfg, run_dir)
    try:
        stage(cfg, run_dir)
    except InputError as err:
        log.error("%s", err)
        sys.exit(2)
    mark_finished(run_dir)


def detach_log_files() -> None:
    """Close the root logger's file handlers (Hydra's ``<run dir>/<job>.log``), which opens its file lazily
    (hydra.job_logging.handlers.file.delay in conf/config.yaml)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


if __name__ == "__main__":
    main()
