"""The data-quality table of ``stage=report``: generate runs beside the paper's CS numbers.

``report.generate_runs`` maps a column id (``cot``, ``agentic``) to a generate run dir.
Weak mean, strong mean, gap, rounds per accepted example, the weak samples' score
std and the share of examples whose weak samples all score the same (GRPO gets no
signal from such a prompt) are means over its ``accepted.jsonl`` (with a standard
error over examples); failure-reason shares
come from its ``stats.json`` (share of rejected rounds). A run that is not named or
has no such file says "missing", never the paper's number.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable, Optional

from autodata.config import ReportConfig
from autodata.scoring import mean
from eval.cells import Cell, cell_text
from eval.metrics import standard_error


def _weak_scores(row: dict[str, Any]) -> list[float]:
    return [float(s) for s in row.get("weak_scores") or [] if s is not None]


def weak_std(row: dict[str, Any]) -> Optional[float]:
    """Standard deviation of one example's weak-solver scores (Bessel-corrected, like GRPO's group std).

    >>> weak_std({"weak_scores": [0.0, 0.5, 1.0]})
    0.5
    >>> weak_std({"weak_scores": [0.3]}) is None
    True
    """
    xs = _weak_scores(row)
    return statistics.stdev(xs) if len(xs) >= 2 else None


def weak_all_equal(row: dict[str, Any]) -> Optional[float]:
    """1.0 when every weak sample scored the same (a GRPO group with no reward variance: no learning signal).

    >>> weak_all_equal({"weak_scores": [0.2, 0.2, 0.2]}), weak_all_equal({"weak_scores": [0.2, 0.4]})
    (1.0, 0.0)
    """
    xs = _weak_scores(row)
    return float(max(xs) - min(xs) < 1e-9) if len(xs) >= 2 else None


def suitability_high(row: dict[str, Any]) -> Optional[float]:
    """1.0 when the loop judge rated the item's GRPO suitability high (legal; None without a loop verdict).

    >>> suitability_high({"loop_judge": {"grpo_suitability": "high"}}), suitability_high({"id": "x"}) is None
    (1.0, True)
    """
    level = (row.get("loop_judge") or {}).get("grpo_suitability")
    return None if level is None else float(level == "high")


# Quality metric id -> its value on one accepted.jsonl row (None: not available for that row)
ACCEPTED_VALUES: dict[str, Callable[[dict[str, Any]], Optional[float]]] = {
    "weak_mean": lambda r: r.get("weak_mean"),
    "strong_mean": lambda r: r.get("strong_mean"),
    "gap": lambda r: r.get("gap"),
    "rounds_per_accepted": lambda r: r.get("rounds_used"),
    "weak_std": weak_std,
    "share_weak_all_equal": weak_all_equal,
    "share_suitability_high": suitability_high,
}
# Quality metric id -> failure reason whose share of the rounds before acceptance it shows (stats.json
# failure_reason_shares: the paper's 80% / 13% are shares of the rejected rounds of documents that were accepted)
REASON_SHARES = {"share_too_easy": "too_easy", "share_failed_on_strong": "failed_on_strong"}
QUALITY_METRICS = list(ACCEPTED_VALUES) + list(REASON_SHARES)
QUALITY_TITLES = {"weak_mean": "weak mean", "strong_mean": "strong mean", "gap": "gap (strong - weak)",
                  "rounds_per_accepted": "rounds per accepted example",
                  "weak_std": "weak-sample score std", "share_weak_all_equal": "weak samples all equal (no GRPO signal)",
                  "share_suitability_high": "loop judge: GRPO suitability high",
                  "share_too_easy": "rounds before acceptance: too easy",
                  "share_failed_on_strong": "rounds before acceptance: failed on strong"}


def read_accepted(run_dir: Path) -> Optional[list[dict[str, Any]]]:
    path = run_dir / "accepted.jsonl"
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mean_stderr(xs: list[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and its standard error over examples.

    >>> mean_stderr([1.0, 3.0])
    (2.0, 1.0)
    """
    if not xs:
        return None, None
    # The eval metrics' mean and standard error, so the two tables of one report agree on what they mean
    return mean(xs), standard_error(xs)


def quality_values(run_dir: Path) -> tuple[dict[str, tuple[Optional[float], Optional[float]]], str, str]:
    """Quality metric -> (value, stderr) of one generate run, where they come from or why missing, and why the
    failure shares are missing when they are."""
    accepted = read_accepted(run_dir)
    stats_path = run_dir / "stats.json"
    stats, unreadable = None, ""
    if stats_path.exists():
        try:
            stats = json.loads(stats_path.read_text())
        except ValueError as err:
            # Torn by a kill (written in place by an older version) or damaged: the generate command writes it again
            unreadable = (f"{stats_path} is not JSON ({type(err).__name__}); rerun the generate command with "
                          f"hydra.run.dir={run_dir} to write it again (finished documents are not run again)")
    if accepted is None and stats is None:
        return {}, unreadable or (f"{run_dir} has neither accepted.jsonl nor stats.json "
                                  f"(run stage=generate with hydra.run.dir={run_dir})"), ""
    out: dict[str, tuple[Optional[float], Optional[float]]] = {}
    for metric, value_of in ACCEPTED_VALUES.items():
        xs = [float(v) for v in (value_of(r) for r in accepted or []) if v is not None]
        out[metric] = mean_stderr(xs)
    shares_missing = unreadable or f"{run_dir}: no stats.json"
    if stats is not None:
        before = stats.get("rounds_before_acceptance")
        shares = stats.get("failure_reason_shares", {})
        for metric, reason in REASON_SHARES.items():
            out[metric] = (shares.get(reason, 0.0), None) if before else (None, None)
        # A stats.json without the count predates the paper's shares (its failure_reason_shares counted the
        # rounds of every document); the generate command rerun on the same run dir recomputes it from the rounds.
        shares_missing = (f"{run_dir}: no rejected round before an acceptance" if before is not None else
                          f"{run_dir}: stats.json predates the rounds-before-acceptance shares; rerun the generate "
                          f"command with hydra.run.dir={run_dir} to recompute it (finished documents are not run again)")
    return out, str(run_dir), shares_missing


def build_quality_cells(cfg: ReportConfig) -> tuple[list[str], list[Cell]]:
    columns = list(dict.fromkeys(list(cfg.quality_paper) + list(cfg.generate_runs)))
    cells = []
    for column in columns:
        spec = cfg.generate_runs.get(column)
        values, source, shares_missing = (quality_values(Path(spec)) if spec
                                          else ({}, "no run named in report.generate_runs", ""))
        published = cfg.quality_paper.get(column, {})
        for metric in QUALITY_METRICS:
            ours, se = values.get(metric, (None, None))
            why = source
            if values and ours is None:
                why = f"{source}: no accepted example has it" if metric in ACCEPTED_VALUES else shares_missing
            cells.append(Cell(metric, column, "data_quality", ours, se, published.get(metric), why))
    return columns, cells


def render_quality(cfg: ReportConfig, columns: list[str], cells: list[Cell]) -> list[str]:
    title = lambda key: cfg.titles.get(key, key)  # noqa: E731
    index = {(c.row, c.column): c for c in cells}
    lines = ["## Data quality (generate runs)", "",
             "Means over accepted examples ± standard error; failure shares are of rejected rounds.", "",
             "| measure | " + " | ".join(title(c) for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for metric in QUALITY_METRICS:
        lines.append(f"| {QUALITY_TITLES[metric]} | " + " | ".join(cell_text(index[(metric, c)], cfg.digits) for c in columns) + " |")
    lines.append("")
    missing = list(dict.fromkeys(f"- {title(c.column)} / {QUALITY_TITLES[c.row]}: {c.source}"
                                 for c in cells if c.ours is None))
    if missing:
        lines += ["Missing data-quality cells:", "", *missing, ""]
    return lines
