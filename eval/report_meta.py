"""The meta-optimization table of ``stage=report``: meta_optimize runs beside the paper's CS result.

``report.meta_runs`` maps a label (``ours``) to a ``stage=meta_optimize`` run dir; the table reads its
``summary.json`` (``autodata/meta/outputs.py``): the validation score of the baseline harness and of the best
kept variant, their difference, the iterations run, the children kept, the children the guards rejected before
any validation call and the children the sabotage monitor flagged. ``report.meta_paper`` holds the paper's
numbers (``conf/report/paper_cs.yaml``), shown as their own row. A run whose summary.json is absent says
"missing" with the reason, never the paper's number. The paper's scores are validation pass rates: a run that
scored ``mean_gap`` says so, and its scores are not compared with them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from autodata.config import ReportConfig
from eval.cells import MISSING, Cell

# Cell.metric of every meta-optimization cell (report.csv's metric column)
META_METRIC = "meta_optimization"
# The score the paper's numbers are (autodata/meta/outputs.py PAPER: CS validation pass rate). The paper does not
# say its unit: a run scored per document (pass_rate) or per round (pass_rate_rounds) is a pass rate either way
PAPER_SCORE = "pass_rate"
PASS_RATES = ("pass_rate", "pass_rate_rounds")
# Measures in table order -> column title; gain is best_score - baseline_score
META_TITLES = {"baseline_score": "baseline", "best_score": "best", "gain": "gain", "iterations": "iterations",
               "kept": "kept", "rejected_by_guard": "rejected by guard", "flagged": "flagged"}
META_MEASURES = list(META_TITLES)
# Measures on the validation score, comparable with the paper's only when the run scored pass_rate
SCORE_MEASURES = ("baseline_score", "best_score", "gain")
# The measures report.meta_paper may give (gain is computed from the two scores), and kept_other_source: the
# sources disagree on the children kept (126 of 233 in the notes, 124 in another summary), so the paper row
# shows both
META_PAPER_KEYS = (*(m for m in META_MEASURES if m != "gain"), "kept_other_source")


def _with_gain(values: dict[str, Any]) -> dict[str, Any]:
    """
    >>> _with_gain({"baseline_score": 0.5, "best_score": 0.75})["gain"]
    0.25
    >>> _with_gain({"best_score": 0.75})["gain"] is None
    True
    """
    base, best = values.get("baseline_score"), values.get("best_score")
    return {**values, "gain": None if base is None or best is None else best - base}


def read_summary(run_dir: Path) -> tuple[Optional[dict[str, Any]], str]:
    """A meta_optimize run's summary.json, or None and why it is missing."""
    path = run_dir / "summary.json"
    if not path.exists():
        history = run_dir / "history.jsonl"
        if history.exists():
            done = sum(1 for line in history.read_text(encoding="utf-8").splitlines() if '"iteration"' in line)
            return None, (f"{path} not found, but {history} holds {done} iteration rows: the run has not finished; "
                          f"rerun the same stage=meta_optimize command with hydra.run.dir={run_dir} to finish it")
        return None, f"{path} not found (run stage=meta_optimize with hydra.run.dir={run_dir})"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return None, f"{path} is not a meta_optimize summary (JSONDecodeError: {err})"
    if not isinstance(summary, dict):
        return None, f"{path} is not a meta_optimize summary (a JSON {type(summary).__name__}, not an object)"
    return summary, str(run_dir)


def build_meta_cells(cfg: ReportConfig) -> tuple[list[Cell], dict[str, str]]:
    """One cell per (measure, run label), with the paper's number where comparable, and each found run's
    score name (label -> score_name; absent for a missing run)."""
    paper = _with_gain(dict(cfg.meta_paper))
    cells, score_names = [], {}
    for label in cfg.meta_runs:
        summary, source = read_summary(Path(cfg.meta_runs[label]))
        values = _with_gain(summary) if summary is not None else {}
        score_name = str(values.get("score_name") or "") if summary is not None else ""
        if summary is not None:
            score_names[label] = score_name or "score_name not recorded"
        comparable = score_name in PASS_RATES
        for measure in META_MEASURES:
            ours = values.get(measure)
            ours = float(ours) if isinstance(ours, (int, float)) and not isinstance(ours, bool) else None
            why = source
            if summary is not None and ours is None:
                why = f"{source}/summary.json has no {measure}"
            published = paper.get(measure)
            if measure in SCORE_MEASURES and summary is not None and not comparable:
                # A mean_gap (or unrecorded) score is not a pass rate: no difference from the paper's
                published = None
                why = (f"{why} (scores are {score_name or 'of an unrecorded score_name'}, "
                       f"the paper's are {PAPER_SCORE}: not compared)")
            cells.append(Cell(measure, label, META_METRIC, ours, None, published, why, run=source))
    return cells, score_names


def _number(measure: str, value: Optional[float], digits: int) -> str:
    """
    >>> _number("gain", 0.175, 3), _number("kept", 126.0, 3), _number("best_score", 0.796, 2)
    ('+0.175', '126', '0.80')
    """
    if value is None:
        return "-"
    if measure in SCORE_MEASURES:
        return f"{value:+.{digits}f}" if measure == "gain" else f"{value:.{digits}f}"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def render_meta(cfg: ReportConfig, cells: list[Cell], score_names: dict[str, str]) -> list[str]:
    title = lambda key: cfg.titles.get(key, key)  # noqa: E731
    index = {(c.row, c.column): c for c in cells}
    lines = ["## Meta-optimization", "",
             "Validation score of the baseline harness and of the best kept variant, iterations run, children "
             "kept, children the guards rejected before scoring and children the sabotage monitor flagged. "
             f"The paper's scores are validation pass rates ({PAPER_SCORE}).", "",
             "| run | score | " + " | ".join(META_TITLES.values()) + " |", "|---|---|" + "---|" * len(META_MEASURES)]
    for label in cfg.meta_runs:
        if label not in score_names:
            lines.append(f"| {title(label)} | {MISSING} | " + " | ".join([MISSING] * len(META_MEASURES)) + " |")
            continue
        name = score_names[label]
        if name not in PASS_RATES:
            name = f"{name} (not {PAPER_SCORE}: scores not comparable with the paper's)"
        texts = [MISSING if index[(m, label)].ours is None else _number(m, index[(m, label)].ours, cfg.digits)
                 for m in META_MEASURES]
        lines.append(f"| {title(label)} | {name} | " + " | ".join(texts) + " |")
    if cfg.meta_paper:
        paper = _with_gain(dict(cfg.meta_paper))
        texts = [_number(m, paper.get(m), cfg.digits) for m in META_MEASURES]
        if paper.get("kept_other_source") is not None and paper.get("kept") != paper["kept_other_source"]:
            at = META_MEASURES.index("kept")
            texts[at] += f" (or {_number('kept', paper['kept_other_source'], cfg.digits)})"
        lines.append(f"| paper | {PAPER_SCORE} | " + " | ".join(texts) + " |")
    lines.append("")
    if not cfg.meta_runs:
        lines += ["No meta_optimize run named: add one with '+report.meta_runs={ours: runs/meta_cs}'.", ""]
    missing = list(dict.fromkeys(f"- {title(c.column)}: {c.source}" for c in cells if c.ours is None))
    if missing:
        lines += ["Missing meta-optimization cells:", "", *missing, ""]
    return lines
