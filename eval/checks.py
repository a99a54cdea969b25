"""Input checks of the eval and report stages (``stage=eval``, ``stage=report``), beside them.

Only the rules that need no file: the sets and runs they name are read and checked when the stage starts.
validation.validate() finds these through the stage registry (autodata/stages.py ``checks``).
"""

from __future__ import annotations

import copy
from typing import Mapping, Optional

from autodata.config import RootConfig, apply_eval_shortcuts, is_judge_role
from autodata.domains import DOMAINS
from autodata.validation import Problem, check_models, check_templates, require_choice, require_positive, require_unit
from eval.report_meta import META_PAPER_KEYS


def check_eval(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """Rules of stage=eval that need no file: the sets themselves are read and checked at start."""
    problems: list[Problem] = []
    # The endpoint rules see the evaluated model as the stage will run it.
    cfg = copy.deepcopy(cfg)
    apply_eval_shortcuts(cfg)
    e = cfg.eval
    require_choice(problems, "domain.name", cfg.domain.name, tuple(sorted(DOMAINS)))
    if not isinstance(e.n, int) or e.n < 1:
        problems.append(Problem("eval.n", e.n, "must be >= 1 (completions per prompt)",
                                "set eval.n=3 for the paper's mean@3 / best@3, or 8 for avg@8"))
    # A k above eval.n is not an error: the default ks must still run with eval.n=1 (PRBench); the stage drops it
    # with a warning. A k below 1 means nothing.
    ks = list(e.ks) if isinstance(e.ks, list) else None
    if ks is None:
        problems.append(Problem("eval.ks", e.ks, "must be a list of integers", "set eval.ks=[1,3]"))
    for k in ks or []:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            problems.append(Problem("eval.ks", k, "must be an integer >= 1 (samples per prompt a metric reads)",
                                    "list ks like eval.ks=[1,3]; eval.n is always added"))
    require_positive(problems, "eval.max_prompts_in_flight", e.max_prompts_in_flight)
    if e.max_tokens is not None:
        require_positive(problems, "eval.max_tokens", e.max_tokens)
    if e.temperature is not None and not 0.0 <= float(e.temperature) <= 2.0:
        problems.append(Problem("eval.temperature", e.temperature, "must lie in [0, 2]",
                                "use 0 for greedy decoding, about 0.6-1.0 for sampling"))
    if e.limit is not None:
        require_positive(problems, "eval.limit", e.limit)
    require_unit(problems, "eval.pass_threshold", e.pass_threshold)
    if not isinstance(e.datasets, list) or not all(isinstance(p, str) and p for p in e.datasets):
        problems.append(Problem("eval.datasets", e.datasets, "must be a list of paths",
                                "set eval.datasets=[runs/cs_agentic] (a generate run dir or a .jsonl file)"))
    judges = list(e.judges) if isinstance(e.judges, list) else []
    if not judges:
        problems.append(Problem("eval.judges", e.judges, "must list at least one judge role",
                                "set eval.judges=[judge], or [judge,judge_kimi] with +judges=kimi"))
    for role in judges:
        if not is_judge_role(role):
            problems.append(Problem("eval.judges", role, "is not a judge role (judge, or judge_<name>)",
                                    "name a further judge judge_<name> and configure it under models.roles.judge_<name>"))
        elif role != "judge" and role not in cfg.models.roles:
            problems.append(Problem("eval.judges", role, f"has no endpoint: models.roles.{role} is not set",
                                    f"declare it: +judges=kimi (conf/judges/*.yaml) or roles.{role} in a models/*.yaml of your own"))
    if len(set(judges)) != len(judges):
        problems.append(Problem("eval.judges", judges, "names a judge twice", "list each judge role once"))
    problems.extend(check_templates(cfg))
    # Eval calls the evaluated model (weak_solver) and every judge.
    problems.extend(check_models(cfg, roles=("weak_solver", *[j for j in judges if is_judge_role(j)]), env=env))
    return problems


def check_report(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """``env`` is unused: the report calls no endpoint."""
    problems: list[Problem] = []
    for key, labels in (("report.runs", cfg.report.runs), ("report.paper", cfg.report.paper)):
        for label in labels:
            row, sep, column = label.rpartition("/")
            if not (sep and row and column):
                problems.append(Problem(f"{key}.{label}", label, "must be a ROW/COLUMN label",
                                        "name it like base/cot_test"))
    for label, specs in cfg.report.flips.items():
        if not isinstance(specs, list) or len(specs) != 2:
            problems.append(Problem(f"report.flips.{label}", specs, "must name two eval runs, [BASE, TRAINED]",
                                    "e.g. '+report.flips={validation: [runs/eval_sci_base, runs/eval_sci_agentic]}'"))
    require_unit(problems, "report.flip_threshold", cfg.report.flip_threshold)
    for label, path in cfg.report.meta_runs.items():
        if not label or not path:
            problems.append(Problem(f"report.meta_runs.{label}", path, "must map a label to a meta_optimize run dir",
                                    "e.g. '+report.meta_runs={ours: runs/meta_cs}'"))
    for key in cfg.report.meta_paper:
        if key not in META_PAPER_KEYS:
            problems.append(Problem(f"report.meta_paper.{key}", cfg.report.meta_paper[key],
                                    "is not a meta-optimization measure", f"use one of {', '.join(META_PAPER_KEYS)}"))
    if not cfg.report.metrics:
        problems.append(Problem("report.metrics", cfg.report.metrics, "must not be empty",
                                "list the metrics to show, e.g. [mean_at_3, best_at_3]"))
    return problems
