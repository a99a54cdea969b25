"""The one entry point: ``python -m autodata.run stage=<name> [overrides...]``.

    python -m autodata.run stage=generate                       # embedded model, embedded corpus
    python -m autodata.run stage=generate method=cot            # CoT Self-Instruct baseline
    python -m autodata.run stage=generate models=openai models.base_url=http://localhost:8000/v1 models.model=Qwen/Qwen3.5-4B
    python -m autodata.run stage=generate hydra.run.dir=runs/cs_agentic   # same dir again = resume

The composed config is converted to typed objects and validated once here;
stages receive a ``RootConfig`` and the run dir.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from autodata import recipe
from autodata.config import register_configs, to_typed
from autodata.rundir import mark_finished, write_provenance
from autodata.stages import resolve_stage
from autodata.validation import ConfigError, validate

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
        validate(cfg)
    except (ConfigError, ValueError) as err:
        log.error("%s", err)
        sys.exit(2)
    write_provenance(cfg, run_dir)
    recipe.report(cfg, run_dir)
    stage(cfg, run_dir)
    mark_finished(run_dir)


if __name__ == "__main__":
    main()
