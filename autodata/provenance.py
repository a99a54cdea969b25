"""Provenance of a run's settings: where each came from (the recipe), and warnings about recipes that cannot be right.

Every run writes to ``recipe.json`` in its run dir the values that differ from the dataclass defaults
(``autodata/config.py``), each with the config file or command-line override that set it last, and prints one line
that counts those of the groups its stage reads (``recipe.print=true`` lists them; so does DEBUG logging).
Sources are found the way Hydra composed the config: its defaults list, in order, with each file's package,
then the command line.

Two checks follow (``warnings``): a CPU-sized experiment whose roles point at real endpoints, and an
evaluated or trained model whose token budget is far below what the experiment declares.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from autodata.config import RootConfig, apply_eval_shortcuts, endpoint_for, model_roles
from autodata.domains import DOMAINS
from autodata.grpo import ALIASES
from autodata.rundir import write_json_atomic
from autodata.stages import reads
from autodata.variants import protected_overrides

# Named for what it logs, not for this module: users type hydra.verbose=autodata.recipe to list the recipe
log = logging.getLogger("autodata.recipe")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DERIVED = "derived (interpolation or eval shortcut)"
# A budget below this share of the experiment's answer_tokens is "far below"
FAR_BELOW = 0.25


@dataclass
class Setting:
    key: str
    value: Any
    default: Any
    source: str


def leaves(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Dotted paths of a nested dict's leaves; a list is one leaf.

    >>> dict(leaves({"a": {"b": 1, "c": [1, 2]}, "d": {}}))
    {'a.b': 1, 'a.c': [1, 2], 'd': {}}
    """
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=False)
    return node


def file_sources(defaults: Iterable[tuple[str, str]], conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """Leaf path -> the last config file that wrote it, for (config path, package) in composition order."""
    sources: dict[str, str] = {}
    for config_path, package in defaults:
        file = conf_dir / f"{config_path}.yaml"
        if not file.exists():
            continue
        content = _plain(OmegaConf.load(file)) or {}
        content.pop("defaults", None)
        content.pop("hydra", None)
        prefix = package.replace("_global_", "").strip(".")
        for key, _ in leaves(content):
            sources[f"{prefix}.{key}" if prefix else key] = f"conf/{config_path}.yaml"
    return sources


def override_sources(overrides: Iterable[str], groups: set[str]) -> dict[str, str]:
    """Key path -> the command-line override that set it (group selections are found through their files)."""
    sources: dict[str, str] = {}
    for text in overrides:
        key, sep, _ = text.partition("=")
        key = key.lstrip("+~")
        if not sep or key in groups or key.startswith("hydra"):
            continue
        sources[key] = f"override {text}"
    return sources


def source_of(key: str, files: dict[str, str], overrides: dict[str, str]) -> str:
    """The command line wins over files; a key set as part of a larger node takes that node's source."""
    for table in (overrides, files):
        probe = key
        while probe:
            if probe in table:
                return table[probe]
            probe = probe.rpartition(".")[0]
    return DERIVED


def effective(cfg: RootConfig, files: dict[str, str], overrides: dict[str, str]) -> list[Setting]:
    """Every value that differs from the dataclass defaults, with its source."""
    ours = dict(leaves(OmegaConf.to_container(OmegaConf.structured(cfg))))
    base = dict(leaves(OmegaConf.to_container(OmegaConf.structured(RootConfig()))))
    settings = []
    for key, value in ours.items():
        default = base.get(key, "(absent)")
        if key == "stage" or value == default:
            continue
        # The steps of a table are the pipeline's business, not a recipe value of the stages it runs
        if key.startswith("pipeline.") and cfg.stage != "pipeline":
            continue
        settings.append(Setting(key, value, default, source_of(key, files, overrides)))
    # A renamed train setting given under TRL's name in train.grpo takes that entry's source
    by_alias = {f"train.{path}": name for name, path in ALIASES.items() if name in cfg.train.grpo}
    for s in settings:
        if s.key in by_alias and s.source == DERIVED:
            alias = f"train.grpo.{by_alias[s.key]}"
            s.source = f"{alias} ({source_of(alias, files, overrides)})"
    return settings


def hydra_sources() -> tuple[dict[str, str], dict[str, str]]:
    """File and override sources of the config this process composed (empty outside a Hydra app)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}, {}
    hc = HydraConfig.get()
    task = list(hc.overrides.task)
    loader = GlobalHydra.instance().config_loader()
    defaults = loader.compute_defaults_list(config_name=hc.job.config_name, overrides=task, run_mode=RunMode.RUN)
    files = file_sources((d.config_path, d.package or "") for d in defaults.defaults
                         if d.config_path and not d.config_path.startswith("hydra/"))
    groups = set(hc.runtime.choices)
    return files, override_sources(task, groups)


def warnings(cfg: RootConfig) -> list[str]:
    """Recipes that cannot give the numbers their experiment promises."""
    out = []
    exp = cfg.experiment
    if exp.cpu_sized:
        real = sorted({ep.backend for ep in (endpoint_for(cfg.models, r) for r in model_roles(cfg.models))
                       if not (ep.backend == "local" and ep.model == "embedded")})
        if real:
            out.append(f"experiment={exp.name} is sized for the embedded model on a CPU (short answers, small rubrics, "
                       f"few documents), but roles run on {', '.join(real)} backends; add experiment={exp.paper} "
                       "for the paper's recipe")
    if exp.answer_tokens:
        budgets: list[tuple[str, Optional[int]]] = []
        if cfg.stage in ("eval", "generate"):
            # A copy: the shortcuts write into models.roles, and a check must not change the run's config
            shortcut = RootConfig(models=copy.deepcopy(cfg.models), eval=cfg.eval)
            apply_eval_shortcuts(shortcut)
            budgets.append(("the evaluated model (models.roles.weak_solver.max_tokens / eval.max_tokens)"
                            if cfg.stage == "eval" else "the weak solver (models.roles.weak_solver.max_tokens)",
                            endpoint_for(shortcut.models, "weak_solver").max_tokens))
        if cfg.stage == "train":
            budgets.append(("the trained model (train.max_completion_length)", cfg.train.max_completion_length))
        for who, budget in budgets:
            if budget is not None and budget < FAR_BELOW * exp.answer_tokens:
                out.append(f"{who} may write {budget} tokens, far below the {exp.answer_tokens} that "
                           f"experiment={exp.name} declares (experiment.answer_tokens): answers will be cut off and "
                           "mean@k / truncation numbers will not be comparable; raise the budget or pick the "
                           "experiment that matches these models")
    d = cfg.domain
    cls = DOMAINS.get(d.name)
    overridden = protected_overrides(d.template_dir, cls.editable_templates, cls.protected_templates) if cls else []
    if overridden and d.allow_protected_templates:
        out.append(f"domain.template_dir={d.template_dir} replaces protected template(s) {', '.join(overridden)} "
                   "(domain.allow_protected_templates=true): scores of this run are not comparable with runs on the "
                   "packaged solver and judge prompts")
    return out


def record(cfg: RootConfig, run_dir: Path) -> list[Setting]:
    """Log one line of the effective recipe (the list with ``recipe.print=true``, else at DEBUG) and every warning;
    write all of it to ``recipe.json`` in the run dir. The console shows only the groups the stage reads
    (autodata/stages.py); recipe.json keeps every value."""
    files, overrides = hydra_sources()
    settings = effective(cfg, files, overrides)
    problems = warnings(cfg)
    shown = [s for s in settings if reads(cfg.stage, s.key)]
    head = (f"recipe: {len(shown)} values differ from the defaults (stage={cfg.stage}, experiment="
            f"{cfg.experiment.name or '(none)'}); see {run_dir / 'recipe.json'}")
    width = max((len(s.key) for s in shown), default=0)
    listed = [f"  {s.key:<{width}} = {json.dumps(s.value, default=str)}   ({s.source})" for s in shown]
    if cfg.recipe.print:
        log.info("%s", "\n".join([head + ":", *listed]))
    else:
        log.info("%s (recipe.print=true lists them)", head)
        log.debug("%s", "\n".join(["recipe:", *listed]))
    for text in problems:
        log.warning("WARNING: %s", text)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "recipe.json", {
        "experiment": cfg.experiment.name,
        "stage": cfg.stage,
        "warnings": problems,
        "settings": [{"key": s.key, "value": s.value, "default": s.default, "source": s.source,
                      "read_by_stage": reads(cfg.stage, s.key)} for s in settings],
    }, default=str)
    return settings
