"""The data-quality table of ``stage=report``: generate runs beside the paper's CS numbers.

``report.generate_runs`` maps a column id (``cot``, ``agentic``) to a generate run dir.
Weak mean, strong mean, gap, rounds per accepted example, the weak samples' score
std and the share of examples whose weak samples all score the same (GRPO gets no
signal from such a prompt) are means over its ``accepted.jsonl`` (with a standard
error over examples); failure-reason shares
come from its ``stats.json`` (share of the rejected rounds before an acceptance,
with a binomial standard error). Every cell carries its n. A run that is not named or
has no such file says "missing", never the paper's number. Each row declares, once
(``QUALITY_ROWS``), which domains it can apply to: a row that cannot apply to the
report's domain (the loop judge's GRPO suitability in a CS report) is left out.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from autodata.config import ReportConfig
from autodata.domains import DOMAINS
from autodata.domains.base import Domain
from autodata.scoring import mean
from eval.cells import Cell, cell_text, read_accepted, run_config
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


@dataclass(frozen=True)
class QualityRow:
    """One measure of the data-quality table, declared once: its title, where its value comes from, and where it
    can apply at all (a row that cannot apply to a report's domain is left out of that report)."""

    title: str
    # Its value on one accepted.jsonl row; the row shows the mean over examples. None: a failure share instead
    value_of: Optional[Callable[[dict[str, Any]], Optional[float]]] = None
    # The failure reason whose share of the rounds before acceptance the row shows (stats.json
    # failure_reason_shares: the paper's 80% / 13% are shares of the rejected rounds of documents then accepted)
    reason: str = ""
    # Whether a domain class can have this measure at all (a property of the class, e.g. has_loop_judge)
    applies: Callable[[type[Domain]], bool] = lambda domain: True
    # Only the agentic loop has rounds before an acceptance: a one-shot (CoT) column says the row does not apply
    loop_only: bool = False
    # The headline plot's panel: scores and shares share a 0-1 axis, rounds get their own
    unit: str = "score"

    def domains(self) -> list[str]:
        """The registered domains this row applies to."""
        return [name for name, cls in DOMAINS.items() if self.applies(cls)]


QUALITY_ROWS: dict[str, QualityRow] = {
    "weak_mean": QualityRow("weak mean", lambda r: r.get("weak_mean")),
    "strong_mean": QualityRow("strong mean", lambda r: r.get("strong_mean")),
    "gap": QualityRow("gap (strong - weak)", lambda r: r.get("gap")),
    "rounds_per_accepted": QualityRow("rounds per accepted example", lambda r: r.get("rounds_used"), unit="rounds"),
    "weak_std": QualityRow("weak-sample score std", weak_std),
    "share_weak_all_equal": QualityRow("weak samples all equal (no GRPO signal)", weak_all_equal),
    # Only a domain with a loop judge rates GRPO suitability (legal)
    "share_suitability_high": QualityRow("loop judge: GRPO suitability high", suitability_high,
                                         applies=lambda domain: domain.has_loop_judge),
    "share_too_easy": QualityRow("rounds before acceptance: too easy", reason="too_easy", loop_only=True),
    "share_failed_on_strong": QualityRow("rounds before acceptance: failed on strong", reason="failed_on_strong",
                                         loop_only=True),
}
# Methods that write one task per document in one round: no rounds before an acceptance
ONE_SHOT_METHODS = ("cot",)


def rows_for(domains: list[str]) -> list[str]:
    """The quality rows that apply to at least one of ``domains`` (every row when no domain is known).

    >>> "share_suitability_high" in rows_for(["cs"]), "share_suitability_high" in rows_for(["legal"])
    (False, True)
    """
    known = [DOMAINS[d] for d in domains if d in DOMAINS]
    return [key for key, row in QUALITY_ROWS.items() if not known or any(row.applies(cls) for cls in known)]


def mean_stderr(xs: list[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and its standard error over examples (None with fewer than two: undefined).

    >>> mean_stderr([1.0, 3.0]), mean_stderr([0.5])
    ((2.0, 1.0), (0.5, None))
    """
    if not xs:
        return None, None
    # The eval metrics' mean and standard error, so the two tables of one report agree on what they mean
    return mean(xs), standard_error(xs) if len(xs) > 1 else None


def share_stderr(share: float, n: int) -> Optional[float]:
    """Binomial standard error of a share of n rounds (eval's truncation rate uses the same).

    >>> share_stderr(0.5, 4), share_stderr(1.0, 1) is None
    (0.25, True)
    """
    return math.sqrt(share * (1 - share) / n) if n > 1 else None


# (value, standard error, n) of one measure of one generate run
Value = tuple[Optional[float], Optional[float], Optional[int]]


def quality_values(run_dir: Path) -> tuple[dict[str, Value], str, str]:
    """Quality row id -> (value, stderr, n) of one generate run, where they come from or why missing, and why the
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
    out: dict[str, Value] = {}
    for key, row in QUALITY_ROWS.items():
        if row.value_of is not None:
            xs = [float(v) for v in (row.value_of(r) for r in accepted or []) if v is not None]
            out[key] = (*mean_stderr(xs), len(xs))
    shares_missing = unreadable or f"{run_dir}: no stats.json"
    if stats is not None:
        before = stats.get("rounds_before_acceptance")
        shares = stats.get("failure_reason_shares", {})
        for key, row in QUALITY_ROWS.items():
            if row.reason:
                share = shares.get(row.reason, 0.0) if before else None
                out[key] = (share, share_stderr(share, before) if share is not None else None, before)
        # A stats.json without the count predates the paper's shares (its failure_reason_shares counted the
        # rounds of every document); the generate command rerun on the same run dir recomputes it from the rounds.
        shares_missing = (f"{run_dir}: no rejected round before an acceptance" if before is not None else
                          f"{run_dir}: stats.json predates the rounds-before-acceptance shares; rerun the generate "
                          f"command with hydra.run.dir={run_dir} to recompute it (finished documents are not run "
                          "again)")
    return out, str(run_dir), shares_missing


def run_method(run_dir: Path, accepted: Optional[list[dict[str, Any]]]) -> str:
    """The method a generate run used: its rows say, else its config.yaml; "" when neither does."""
    for row in accepted or []:
        if row.get("method"):
            return str(row["method"])
    cfg = run_config(run_dir)
    return cfg.method.name if cfg is not None else ""


@dataclass
class QualityTable:
    columns: list[str]
    # Quality row ids that apply to the report's domains, in table order
    rows: list[str]
    cells: list[Cell]
    # (row, column) -> why the row cannot apply to that column's run (no cell is made for it)
    not_applicable: dict[tuple[str, str], str] = field(default_factory=dict)


def build_quality_cells(cfg: ReportConfig, domains: list[str]) -> QualityTable:
    """One cell per (applicable row, column); ``domains``: those the report's runs were made for."""
    columns = list(dict.fromkeys(list(cfg.quality_paper) + list(cfg.generate_runs)))
    table = QualityTable(columns, rows_for(domains), [])
    for column in columns:
        spec = cfg.generate_runs.get(column)
        values, source, shares_missing = (quality_values(Path(spec)) if spec
                                          else ({}, "no run named in report.generate_runs", ""))
        method = run_method(Path(spec), read_accepted(Path(spec))) if spec else ""
        published = cfg.quality_paper.get(column, {})
        for key in table.rows:
            if QUALITY_ROWS[key].loop_only and method in ONE_SHOT_METHODS:
                table.not_applicable[(key, column)] = f"{method}: one round per document, none before an acceptance"
                continue
            ours, se, n = values.get(key, (None, None, None))
            why = source
            if values and ours is None:
                why = f"{source}: no accepted example has it" if QUALITY_ROWS[key].value_of else shares_missing
            table.cells.append(Cell(key, column, "data_quality", ours, se, published.get(key), why, run=source, n=n))
    return table


def render_quality(cfg: ReportConfig, table: QualityTable) -> list[str]:
    title = lambda key: cfg.titles.get(key, key)  # noqa: E731
    index = {(c.row, c.column): c for c in table.cells}
    lines = ["## Data quality (generate runs)", "",
             "Means over accepted examples ± standard error (n: examples); failure shares are of the rejected rounds "
             "before an acceptance (n: rounds).", "",
             "| measure | " + " | ".join(title(c) for c in table.columns) + " |", "|---|" + "---|" * len(table.columns)]
    for key in table.rows:
        texts = [f"does not apply ({table.not_applicable[(key, c)]})" if (key, c) in table.not_applicable
                 else cell_text(index[(key, c)], cfg.digits) for c in table.columns]
        lines.append(f"| {QUALITY_ROWS[key].title} | " + " | ".join(texts) + " |")
    lines.append("")
    missing = list(dict.fromkeys(f"- {title(c.column)} / {QUALITY_ROWS[c.row].title}: {c.source}"
                                 for c in table.cells if c.ours is None))
    if missing:
        lines += ["Missing data-quality cells:", "", *missing, ""]
    return lines
