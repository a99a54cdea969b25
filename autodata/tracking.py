"""W&B runs for every stage (``logger=wandb``): one run per run dir, offline unless WANDB_MODE says otherwise.

The run id is kept in ``wandb_id.txt`` in the run dir, so a resumed stage
continues the same W&B run instead of starting a second one. ``WANDB_PROJECT``
names the project (default ``autodata``); ``wandb sync RUN_DIR/wandb/offline-run-*``
uploads an offline run.

Every stage of one experiment logs into one W&B group, ``experiment.name`` (``WANDB_RUN_GROUP`` wins when set, so
a sweep can put its runs in a group of its own), with ``job_type`` = the stage and tags [stage, domain, method]:
the project's runs page groups by experiment, then by job type. A run is named ``<experiment>/<stage>``, followed
by the point's swept values in a Hydra sweep (``cpu/generate/min_gap=0.1,method=cot``) or by the run dir's name
when ``hydra.run.dir`` names it (the pipeline's steps: ``paper_cs/train/train_cot``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from autodata.config import RootConfig
from autodata.errors import lookup
from autodata.rundir import write_text_atomic

ID_FILE = "wandb_id.txt"


def start_wandb(cfg: RootConfig, run_dir: Path, job_type: str) -> Optional[Any]:
    """The stage's W&B run, or None when ``logger`` is not wandb (the starter ``LOGGERS`` names for it)."""
    return lookup(LOGGERS, cfg.logger, "logger", key="logger")(cfg, run_dir, job_type)


def _no_run(cfg: RootConfig, run_dir: Path, job_type: str) -> None:
    return None


def _wandb_run(cfg: RootConfig, run_dir: Path, job_type: str) -> Any:
    import wandb
    from omegaconf import OmegaConf

    os.environ.setdefault("WANDB_MODE", "offline")
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file = run_dir / ID_FILE
    run_id = (id_file.read_text().strip() if id_file.exists() else "") or uuid.uuid4().hex[:12]
    write_text_atomic(id_file, run_id)
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "autodata"), dir=str(run_dir),
                      name=run_name(cfg, job_type, run_dir), id=run_id, job_type=job_type, resume="allow",
                      group=run_group(cfg, os.environ),
                      tags=run_tags(cfg, job_type), config=OmegaConf.to_container(OmegaConf.structured(cfg)))


# The one list of ``logger`` values (validation reads it): name -> what starts the stage's run, or None for no run
LOGGERS: dict[str, Callable[[RootConfig, Path, str], Optional[Any]]] = {"none": _no_run, "wandb": _wandb_run}


def run_name(cfg: RootConfig, stage: str, run_dir: Path) -> str:
    """``<experiment>/<stage>[/<swept values> | /<run dir name>]``: short, and the same on every resume.

    >>> cfg = RootConfig(stage="eval"); cfg.experiment.name = "paper_cs"
    >>> run_name(cfg, "eval", Path("outputs/eval/2026-01-01_00-00-00"))  # outside Hydra: no suffix
    'paper_cs/eval'
    """
    parts = [cfg.experiment.name, stage, hydra_label(stage, run_dir)]
    return "/".join(p for p in parts if p)


def hydra_label(stage: str, run_dir: Path) -> str:
    """What tells this run apart from its siblings: in a sweep the point's swept values, for a run dir named with
    hydra.run.dir its name; "" otherwise (a timestamped run dir, or no Hydra app)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return sweep_label(list(hc.overrides.task), swept_keys(Path(hc.sweep.dir) / "multirun.yaml"))
    named = any(o.partition("=")[0].lstrip("+") == "hydra.run.dir" for o in hc.overrides.hydra)
    return run_dir.name if named and run_dir.name != stage else ""


def swept_keys(multirun_yaml: Path) -> Optional[set[str]]:
    """Keys the sweep varies, read from the sweep's own record (Hydra writes multirun.yaml before any job starts,
    with the command line's overrides unexpanded); None when it cannot be read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        record = OmegaConf.load(multirun_yaml)
        task = list(record.hydra.overrides.task)
        params = dict(OmegaConf.select(record, "hydra.sweeper.params", default=None) or {})
    except Exception:  # a missing or foreign file: the caller falls back to every override
        return None
    texts = task + [f"{k}={v}" for k, v in params.items()]
    return {o.get_key_element() for o in OverridesParser.create().parse_overrides(texts) if o.is_sweep_override()}


def sweep_label(task: list[str], swept: Optional[set[str]]) -> str:
    """The point's swept overrides in command-line order, each key cut to its last part where that stays unique;
    every override when the swept keys are unknown.

    >>> sweep_label(["stage=generate", "domain.acceptance.min_gap=0.1", "method=cot", "corpus.limit=1"],
    ...             {"domain.acceptance.min_gap", "method"})
    'min_gap=0.1,method=cot'
    """
    chosen = [o for o in task if swept is None or o.partition("=")[0].lstrip("+~") in swept]
    keys = [o.partition("=")[0].lstrip("+~") for o in chosen]
    leaves = [k.rpartition(".")[2] for k in keys]
    short = [leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)]
    return ",".join(f"{s}={o.partition('=')[2]}" for s, o in zip(short, chosen))


def run_group(cfg: RootConfig, env: Mapping[str, str]) -> Optional[str]:
    """The W&B group of every stage of one experiment: WANDB_RUN_GROUP when set (sweeps), else the experiment.

    >>> cfg = RootConfig(stage="eval"); cfg.experiment.name = "paper_cs"
    >>> run_group(cfg, {}), run_group(cfg, {"WANDB_RUN_GROUP": "sweep_lr"})
    ('paper_cs', 'sweep_lr')
    """
    return env.get("WANDB_RUN_GROUP") or cfg.experiment.name or None


def run_tags(cfg: RootConfig, job_type: str) -> list[str]:
    """[stage, domain, method], for filtering runs across experiments.

    >>> run_tags(RootConfig(stage="eval"), "eval")
    ['eval', 'cs', 'agentic']
    """
    return list(dict.fromkeys([job_type, cfg.domain.name, cfg.method.name]))


# Characters of a question shown in the accepted-examples table
TABLE_QUESTION_CHARS = 200


def accepted_panels(rows: list[dict[str, Any]], prefix: str = "generate") -> dict[str, Any]:
    """What ``wandb_run.log`` takes for a generate run's accepted examples: histograms of the weak and strong means,
    gaps and rounds used (``<prefix>/<field>_accepted_hist``) and a table of the examples
    (``<prefix>/accepted_examples``: id, shortened question, weak_mean, strong_mean, gap, rounds_used).
    {} without rows."""
    if not rows:
        return {}
    import wandb

    panels: dict[str, Any] = {}
    for key in ("weak_mean", "strong_mean", "gap", "rounds_used"):
        values = [v for r in rows if isinstance(v := r.get(key), (int, float)) and not isinstance(v, bool)]
        if values:
            panels[f"{prefix}/{key}_accepted_hist"] = wandb.Histogram(values)
    table = wandb.Table(columns=["id", "question", "weak_mean", "strong_mean", "gap", "rounds_used"])
    for r in rows:
        question = str(r.get("question") or "")
        if len(question) > TABLE_QUESTION_CHARS:
            question = question[:TABLE_QUESTION_CHARS - 1] + "\u2026"
        table.add_data(r.get("id"), question, r.get("weak_mean"), r.get("strong_mean"), r.get("gap"),
                       r.get("rounds_used"))
    panels[f"{prefix}/accepted_examples"] = table
    return panels


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
