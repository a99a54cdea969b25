"""The data-quality table of ``stage=report``: generate runs beside the paper's CS numbers.

``report.generate_runs`` maps a column id (``cot``, ``agentic``) to a generate run dir.
Weak mean, strong mean, gap and rounds per accepted example are means over its
``accepted.jsonl`` (with a standard error over examples); failure-reason shares
come from its ``stats.json`` (share of rejected rounds). A run that is not named or
has no such file says "missing", never the paper's number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from autodata.config import ReportConfig

# Quality metric id -> field of an accepted.jsonl row
ACCEPTED_FIELDS = {"weak_mean": "weak_mean", "strong_mean": "strong_mean", "gap": "gap",
                   "rounds_per_accepted": "rounds_used"}
# Quality metric id -> failure reason whose share of rejected rounds it shows
REASON_SHARES = {"share_too_easy": "too_easy", "share_failed_on_strong": "failed_on_strong"}
QUALITY_METRICS = list(ACCEPTED_FIELDS) + list(REASON_SHARES)
QUALITY_TITLES = {"weak_mean": "weak mean", "strong_mean": "strong mean", "gap": "gap (strong - weak)",
                  "rounds_per_accepted": "rounds per accepted example",
                  "share_too_easy": "rejected rounds: too easy", "share_failed_on_strong": "rejected rounds: failed on strong"}


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
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def quality_values(run_dir: Path) -> tuple[dict[str, tuple[Optional[float], Optional[float]]], str]:
    """Quality metric -> (value, stderr) of one generate run, and where they come from or why missing."""
    accepted = read_accepted(run_dir)
    stats_path = run_dir / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
    if accepted is None and stats is None:
        return {}, (f"{run_dir} has neither accepted.jsonl nor stats.json "
                    f"(run stage=generate with hydra.run.dir={run_dir})")
    out: dict[str, tuple[Optional[float], Optional[float]]] = {}
    for metric, key in ACCEPTED_FIELDS.items():
        xs = [float(r[key]) for r in accepted or [] if r.get(key) is not None]
        out[metric] = mean_stderr(xs)
    if stats is not None:
        reasons = stats.get("failure_reasons", {})
        rejected = sum(reasons.values())
        for metric, reason in REASON_SHARES.items():
            out[metric] = (reasons.get(reason, 0) / rejected, None) if rejected else (None, None)
    return out, str(run_dir)


def build_quality_cells(cfg: ReportConfig) -> tuple[list[str], list[Any]]:
    from eval.report import Cell

    columns = list(dict.fromkeys(list(cfg.quality_paper) + list(cfg.generate_runs)))
    cells = []
    for column in columns:
        spec = cfg.generate_runs.get(column)
        values, source = quality_values(Path(spec)) if spec else ({}, "no run named in report.generate_runs")
        published = cfg.quality_paper.get(column, {})
        for metric in QUALITY_METRICS:
            ours, se = values.get(metric, (None, None))
            why = source
            if values and ours is None:
                why = f"{source}: no accepted examples" if metric in ACCEPTED_FIELDS else f"{source}: no rejected rounds"
            cells.append(Cell(metric, column, "data_quality", ours, se, published.get(metric), why))
    return columns, cells


def render_quality(cfg: ReportConfig, columns: list[str], cells: list[Any]) -> list[str]:
    from eval.report import cell_text

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
