"""The title and subtitle of ``stage=report``: what ran, read from the runs themselves.

The paper's table is about its models (``report.paper_models``); ours may be anything from the embedded 135M
model to the paper's. So the title names the models our runs actually trained and evaluated, and the lines under
it say which experiment made them, which model played each role (from each run's ``config.yaml`` and eval's
``metrics.json``), and whether acceptance was loosened or tightened against the paper's thresholds (from each
generate run's ``recipe.json``: a ``domain.acceptance`` value set by an experiment file or a command-line
override rather than by a ``conf/domain/`` option). A run that recorded none of this is named as such, never
guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from autodata.backends.embedded import EMBEDDED
from autodata.config import ReportConfig, RootConfig, endpoint_for
from eval.cells import parse_spec, read_accepted, run_config

# Shown for the embedded default model (autodata/backends/embedded.py)
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded)"
# Generate roles named under the title, in the paper's order (paper notes, "Models used in the paper")
GENERATE_ROLES = (("weak_solver", "weak solver (the model trained)"), ("strong_solver", "strong solver"),
                  ("challenger", "challenger"), ("judge", "judge"))
# Which way each acceptance threshold loosens the rule: +1 when a larger value accepts more tasks, -1 when a
# smaller one does (autodata/acceptance.py: weak mean < weak_max, strong mean >= strong_min, gap >= min_gap, ...)
LOOSER = {"weak_max": 1, "weak_run_max": 1, "strong_max": 1, "weak_max_correct": 1, "strong_min": -1,
          "min_gap": -1, "strong_min_correct": -1, "reject_zero_runs": -1, "require_loop_judge_accept": -1}
ACCEPTANCE = "domain.acceptance."


def model_name(model: str) -> str:
    """How a model is named under the title: the embedded one by its real name, a train run's output as GRPO of
    the model that run trained.

    >>> model_name("embedded"), model_name("Qwen/Qwen3.5-4B")
    ('SmolLM2-135M-Instruct (embedded)', 'Qwen/Qwen3.5-4B')
    """
    if model == EMBEDDED:
        return EMBEDDED_NAME
    trained = trained_from(model)
    return f"GRPO of {model_name(trained)} ({model})" if trained else model


def trained_from(model: str) -> str:
    """The policy a train run started from, when ``model`` is that run's output (``RUN/final``); else ""."""
    path = Path(model)
    cfg = run_config(path.parent) if path.name == "final" else None
    return cfg.train.model if cfg is not None and cfg.stage == "train" else ""


def base_model(model: str) -> str:
    """The untrained model behind ``model`` (itself unless it is a train run's output)."""
    trained = trained_from(model)
    return base_model(trained) if trained else model


@dataclass
class RunsSeen:
    """What the report's runs recorded about themselves."""

    # experiment name -> its description
    experiments: dict[str, str] = field(default_factory=dict)
    # role title -> models that played it
    roles: dict[str, list[str]] = field(default_factory=dict)
    # row id -> models its eval runs evaluated
    evaluated: dict[str, list[str]] = field(default_factory=dict)
    # Untrained models our runs trained or evaluated (the title's)
    base_models: list[str] = field(default_factory=list)
    # Domains the runs were made for
    domains: list[str] = field(default_factory=list)
    # Runs that recorded no config
    unrecorded: list[str] = field(default_factory=list)
    # One line per generate column whose acceptance differs from the paper's thresholds
    acceptance: list[str] = field(default_factory=list)

    def add(self, table: dict[str, list[str]], key: str, value: str) -> None:
        if value and value not in table.setdefault(key, []):
            table[key].append(value)

    def note(self, cfg: Optional[RootConfig], run: str) -> None:
        if cfg is None:
            self.unrecorded.append(run)
            return
        if cfg.experiment.name:
            self.experiments.setdefault(cfg.experiment.name, cfg.experiment.description)
        if cfg.domain.name not in self.domains:
            self.domains.append(cfg.domain.name)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def collect(cfg: ReportConfig) -> RunsSeen:
    seen = RunsSeen()
    for column, spec in cfg.generate_runs.items():
        run_dir = Path(spec)
        if not run_dir.is_dir():
            continue  # the table names it as missing
        run_cfg = run_config(run_dir)
        seen.note(run_cfg, spec)
        if run_cfg is None:
            # Accepted rows name their domain too
            for row in read_accepted(run_dir) or []:
                if isinstance(row.get("domain"), str) and row["domain"] not in seen.domains:
                    seen.domains.append(row["domain"])
            continue
        for role, title in GENERATE_ROLES:
            endpoint = endpoint_for(run_cfg.models, role)
            # A judge that samples its verdicts gives noisy scores; the paper's grades greedily
            sampled = f" (verdicts sampled at temperature {endpoint.temperature:g})" if (
                role == "judge" and endpoint.temperature) else ""
            seen.add(seen.roles, title, model_name(endpoint.model) + sampled)
        trained = endpoint_for(run_cfg.models, "weak_solver").model
        if model_name(base_model(trained)) not in seen.base_models:
            seen.base_models.append(model_name(base_model(trained)))
        # A CoT run records the rule per example without applying it
        line = acceptance_change(run_dir, cfg.titles.get(column, column)) if run_cfg.method.name != "cot" else ""
        if line:
            seen.acceptance.append(line)
    eval_specs = [(label.rpartition("/")[0], spec) for label, spec in cfg.runs.items()]
    eval_specs += [("", spec) for specs in cfg.flips.values() for spec in specs]
    for row, spec in eval_specs:
        path_text = parse_spec(spec)[0]
        run_dir = Path(path_text)
        if not run_dir.is_dir():
            continue  # the table names it as missing
        seen.note(run_config(run_dir), path_text)
        metrics = read_metrics(run_dir)
        model = metrics.get("model")
        if isinstance(model, str) and model:
            if row:
                seen.add(seen.evaluated, cfg.titles.get(row, row), model_name(model))
            if model_name(base_model(model)) not in seen.base_models:
                seen.base_models.append(model_name(base_model(model)))
        judges = metrics.get("judges")
        for role, judge_model in (judges.items() if isinstance(judges, dict) else []):
            seen.add(seen.roles, f"eval grader ({role})", model_name(str(judge_model)))
        if isinstance(metrics.get("domain"), str) and metrics["domain"] not in seen.domains:
            seen.domains.append(metrics["domain"])
    for spec in cfg.meta_runs.values():
        if Path(spec).is_dir():
            seen.note(run_config(Path(spec)), spec)
    seen.unrecorded = list(dict.fromkeys(seen.unrecorded))
    return seen


def acceptance_change(run_dir: Path, column: str) -> str:
    """One line naming each acceptance threshold an experiment or override changed, beside the paper's, and
    whether that loosens or tightens the rule; "" when none was changed or the run has no recipe.json.

    The paper's value is the one the run's ``conf/domain/`` option sets, else the dataclass default (the paper's CS
    rule).
    """
    try:
        settings = json.loads((run_dir / "recipe.json").read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    domain_files = {s["source"] for s in settings if str(s.get("source", "")).startswith("conf/domain/")}
    paper: dict[str, Any] = {}
    for source in domain_files:
        option = Path(__file__).resolve().parents[1] / source
        if option.exists():
            paper.update((yaml.safe_load(option.read_text()) or {}).get("acceptance") or {})
    changed = [s for s in settings if str(s.get("key", "")).startswith(ACCEPTANCE)
               and not str(s.get("source", "")).startswith("conf/domain/")]
    if not changed:
        return ""
    directions, parts = set(), []
    for s in changed:
        name = s["key"][len(ACCEPTANCE):]
        was = paper.get(name, s.get("default"))
        parts.append(f"{name} {s['value']} (paper {was})")
        sign = LOOSER.get(name)
        if sign is not None and isinstance(was, (int, float)) and isinstance(s["value"], (int, float)):
            directions.add("loosened" if (float(s["value"]) - float(was)) * sign > 0 else "tightened")
        else:
            directions.add("changed")
    verb = directions.pop() if len(directions) == 1 else "changed"
    sources = ", ".join(sorted({str(s["source"]) for s in changed}))
    return f"Acceptance {verb} vs the paper's thresholds ({column}, set by {sources}): {', '.join(parts)}."


def header_lines(cfg: ReportConfig, seen: RunsSeen) -> list[str]:
    """The title line and the subtitle lines under it."""
    ours = ", ".join(seen.base_models) or "models not recorded by the runs"
    lines = [f"# {cfg.title}: ours on {ours}", ""]
    if seen.experiments:
        lines.append("Experiment " + "; ".join(f"`{name}`: {text}" if text else f"`{name}`"
                                               for name, text in seen.experiments.items()) + ".")
    else:
        lines.append("Experiment: not recorded by the runs.")
    for title, models in seen.roles.items():
        lines.append(f"- {title}: {', '.join(models)}")
    for row, models in seen.evaluated.items():
        lines.append(f"- evaluated as {row}: {', '.join(models)}")
    if seen.unrecorded:
        lines.append(f"- runs without a readable config.yaml (models not known): {', '.join(seen.unrecorded)}")
    if cfg.paper_models:
        lines += ["", f"The paper's models: {cfg.paper_models}."]
    if seen.acceptance:
        lines += ["", *seen.acceptance]
    lines.append("")
    return lines
