"""``stage=report``: our eval numbers beside the paper's, as report.md and report.csv.

    python -m autodata.run stage=report report=paper_cs hydra.run.dir=runs/report_cs \\
        '+report.runs={base/cot_test: runs/eval_base_cot, base/agentic_test: runs/eval_base_agentic}'

``report.runs`` maps a "row/column" label to an eval run dir (``'RUN_DIR#SET'``,
quoted, picks one set of a run that evaluated several; ``'RUN_DIR#SET@JUDGE'``
one judge of a run graded by several, e.g. ``@judge_kimi``; without it a cell
shows the run's primary judge; ``+`` because Hydra adds new keys to a dict only
with it). ``report=paper_cs`` brings the
paper's CS table (rows, columns, published numbers). Each cell shows, per metric,
our value with its standard error and n (``n/a (n=1)`` where one prompt leaves the
standard error undefined), the paper's value and the difference. A run that is not
named, or whose metrics.json is absent, says "missing": the paper's number is never
shown in its place. The title names the models our runs actually used, and the lines
under it the experiment, each role's model and any loosened acceptance
(``eval/report_header.py``).

``report.delta_metrics`` shows those metrics as differences from the
``report.delta_from`` row (the paper's science table gives avg@8 gains over the
base model). ``report.generate_runs`` adds the data-quality table
(``eval/report_tables.py``), ``report.flips`` the wrong-to-right flips and how many
came from fixing truncation (``eval/flips.py``), ``report.meta_runs`` the meta-optimization table of
``stage=meta_optimize`` runs beside ``report.meta_paper`` (``eval/report_meta.py``), and ``report.plots`` PNG plots
embedded in report.md: a headline per table (ours with standard errors beside the paper's) and the distributions
behind the data-quality table (``eval/report_plots.py`` picks the numbers, ``eval/plots.py`` draws); a plot whose
data is missing is named as skipped.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from autodata.config import ReportConfig, RootConfig
from autodata.tracking import start_wandb
from eval import report_plots as rp
# Cells live in their own module so report_tables.py and flips.py can use them without importing this one
from eval.cells import MISSING, Cell, ReportError, cell_text, load_run_metrics
from eval.flips import flip_stats, load_samples
from eval.report_header import collect, header_lines
from eval.report_meta import build_meta_cells, render_meta
from eval.report_tables import build_quality_cells, render_quality

log = logging.getLogger(__name__)


def _split(label: str) -> tuple[str, str]:
    row, sep, column = label.rpartition("/")
    if not sep or not row or not column:
        raise ReportError(f"report label {label!r} must be ROW/COLUMN, e.g. base/cot_test")
    return row, column


def build_cells(cfg: ReportConfig) -> tuple[list[str], list[str], list[Cell]]:
    labels = list(cfg.paper) + [k for k in cfg.runs if k not in cfg.paper]
    pairs = [_split(label) for label in labels]
    rows = list(cfg.rows) or list(dict.fromkeys(r for r, _ in pairs))
    columns = list(cfg.columns) or list(dict.fromkeys(c for _, c in pairs))
    cells = []
    for row in rows:
        for column in columns:
            label = f"{row}/{column}"
            spec = cfg.runs.get(label)
            values, source = load_run_metrics(spec) if spec else (None, "no run named in report.runs")
            published = cfg.paper.get(label, {})
            for metric in cfg.metrics:
                est = (values or {}).get(metric)
                est = est if isinstance(est, dict) else {}
                ours = est.get("value")
                # A run that lacks this metric (e.g. evaluated with eval.n=8) is named as the reason.
                why = f"{source} has no {metric}" if values is not None and ours is None else source
                n = est.get("n") if isinstance(est.get("n"), int) else None
                cells.append(Cell(row, column, metric, ours, est.get("stderr"), published.get(metric), why,
                                  samples=(values or {}).get("samples"),
                                  judge_failures=(values or {}).get("judge_failures"), run=source, n=n))
    return rows, columns, to_deltas(cfg, cells)


def to_deltas(cfg: ReportConfig, cells: list[Cell]) -> list[Cell]:
    """Metrics in delta_metrics become ours minus the delta_from row (same column); that row stays absolute."""
    if not cfg.delta_from:
        return cells
    base = {(c.column, c.metric): c for c in cells if c.row == cfg.delta_from}
    for c in cells:
        b = base.get((c.column, c.metric))
        if c.metric not in cfg.delta_metrics or c.row == cfg.delta_from or b is None or c.ours is None:
            continue
        if b.ours is None:
            c.ours, c.stderr = None, None
            c.source = f"{c.source}, but the {cfg.delta_from} row it is a difference from is missing"
        else:
            c.ours = c.ours - b.ours
            # Undefined when either side's is (one prompt); n is the smaller side's
            c.stderr = (None if c.stderr is None or b.stderr is None
                        else math.sqrt(c.stderr ** 2 + b.stderr ** 2))
            c.n = None if c.n is None or b.n is None else min(c.n, b.n)
    return cells


def render_markdown(cfg: ReportConfig, rows: list[str], columns: list[str], cells: list[Cell]) -> str:
    """The eval table (one section per metric) with its judge failures and missing cells."""
    title = lambda key: cfg.titles.get(key, key)  # noqa: E731
    index = {(c.row, c.column, c.metric): c for c in cells}
    lines = ["Ours ± standard error over prompts (n: prompts; n/a where n < 2 leaves it undefined), the paper's "
             "number, and ours minus the paper's.", ""] if cells else []
    for metric in cfg.metrics if cells else []:
        delta = f" (difference from {title(cfg.delta_from)})" if cfg.delta_from and metric in cfg.delta_metrics else ""
        lines += [f"## {metric}{delta}", "", "| model | " + " | ".join(title(c) for c in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for row in rows:
            lines.append(f"| {title(row)} | " + " | ".join(cell_text(index[(row, c, metric)], cfg.digits) for c in columns) + " |")
        lines.append("")
    failed = {(c.row, c.column): c for c in cells if c.judge_failures}
    if failed:
        lines += ["## Judge failures", "",
                  "Samples the judge could not grade are left out of the cell's metrics, never scored 0:", ""]
        # c.run, not c.source: the last metric's source may say why that metric is missing, or name the
        # delta_from row's run
        lines += [f"- {title(c.row)} / {title(c.column)}: {c.judge_failures} of {c.samples} samples ({c.run})"
                  for c in failed.values()]
        lines.append("")
    missing = [c for c in cells if c.ours is None]
    if missing:
        lines += ["## Missing cells", ""]
        seen = set()
        for c in missing:
            if (c.row, c.column, c.source) not in seen:
                seen.add((c.row, c.column, c.source))
                lines.append(f"- {title(c.row)} / {title(c.column)}: {c.source}")
        lines.append("")
    return "\n".join(lines)


def write_csv(path: Path, cells: list[Cell]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "column", "metric", "ours", "stderr", "n", "paper", "diff", "source"])
        for c in cells:
            ours = ("n/a" if c.n == 0 else MISSING) if c.ours is None else f"{c.ours:.6f}"
            w.writerow([c.row, c.column, c.metric, ours, c.stderr_text,
                        "" if c.n is None else c.n, "" if c.paper is None else c.paper,
                        "" if c.diff is None else f"{c.diff:.6f}", c.source])


FLIP_ROW = "share_flips_from_truncation"


def flip_section(cfg: ReportConfig) -> tuple[list[str], list[Cell]]:
    """The flips table (markdown lines) and one cell per label: the share of wrong-to-right flips whose base
    answer was truncated, beside the paper's."""
    lines = ["## Wrong-to-right flips", "",
             f"Pairs of (prompt, sample) of a base and a trained eval run; right means score >= {cfg.flip_threshold}. "
             "The share counts the wrong-to-right flips whose base answer had hit the token budget.", "",
             "| set | base -> trained | pairs | wrong -> right | right -> wrong | share from fixing truncation |",
             "|---|---|---|---|---|---|"]
    cells = []
    for label in list(dict.fromkeys(list(cfg.flips) + list(cfg.flips_paper))):
        cell, counts = _flip_cell(cfg, label)
        cells.append(cell)
        lines.append(f"| {cfg.titles.get(label, label)} | {counts} | {cell_text(cell, cfg.digits)} |")
    missing = [c for c in cells if c.ours is None]
    lines.append("")
    if missing:
        lines += ["Missing flip cells:", "", *[f"- {cfg.titles.get(c.column, c.column)}: {c.source}" for c in missing],
                  ""]
    return lines, cells


def _flip_cell(cfg: ReportConfig, label: str) -> tuple[Cell, str]:
    """One label's flip cell and the table columns before it (runs, pairs, flips each way; "-" when missing)."""
    paper = cfg.flips_paper.get(label)
    specs = cfg.flips.get(label)
    missing = " | ".join(["-"] * 4)
    if not specs:
        return Cell(FLIP_ROW, label, "flips", None, None, paper, "no runs named in report.flips"), missing
    if len(specs) != 2:
        raise ReportError(f"report.flips.{label} must name two eval runs [BASE, TRAINED], found {specs}")
    try:
        (base, base_src), (trained, trained_src) = load_samples(specs[0]), load_samples(specs[1])
    except ReportError as err:
        return Cell(FLIP_ROW, label, "flips", None, None, paper, str(err)), missing
    stats = flip_stats(base, trained, cfg.flip_threshold)
    source = f"{base_src} -> {trained_src}"
    why = source if stats.wrong_to_right else f"{source}: no wrong-to-right flips"
    cell = Cell(FLIP_ROW, label, "flips", stats.share_from_truncation, stats.stderr, paper, why,
                n=stats.wrong_to_right)
    return cell, (f"{source} | {stats.pairs} ({stats.ungraded_pairs} ungraded left out) | {stats.wrong_to_right} | "
                  f"{stats.right_to_wrong}")


def make_report(cfg: ReportConfig, run_dir: Path, domain: str = "") -> list[Cell]:
    """Write report.md, report.csv and the plots; return every cell. ``domain``: the report stage's own, used when
    no run recorded the domain it was made for (rows that cannot apply to it are left out)."""
    if not cfg.runs and not cfg.generate_runs and not cfg.flips and not cfg.meta_runs:
        raise ReportError("report.runs and report.generate_runs are empty: name eval runs, e.g. report=paper_cs "
                          "'+report.runs={base/cot_test: runs/eval_base_cot}' (stage=eval writes them), "
                          "or generate runs, e.g. '+report.generate_runs={cot: runs/cs_cot}', "
                          "or meta_optimize runs, e.g. '+report.meta_runs={ours: runs/meta_cs}'")
    run_dir.mkdir(parents=True, exist_ok=True)
    seen = collect(cfg)
    lines = header_lines(cfg, seen)
    rows, columns, cells = build_cells(cfg) if cfg.runs or cfg.paper else ([], [], [])
    lines.append(render_markdown(cfg, rows, columns, cells))
    if cfg.plots and cells:
        lines += rp.embed(run_dir, "headline_eval.png", "Headline: ours beside the paper",
                          *rp.eval_headline(cfg, cells))
    table = None
    if cfg.generate_runs or cfg.quality_paper:
        table = build_quality_cells(cfg, seen.domains or ([domain] if domain else []))
        lines += render_quality(cfg, table)
        cells = cells + table.cells
        if cfg.plots:
            lines += rp.embed(run_dir, "headline_quality.png", "Headline: data quality beside the paper",
                              *rp.quality_headline(cfg, table))
    if cfg.flips or cfg.flips_paper:
        flip_lines, flip_cells = flip_section(cfg)
        lines += flip_lines
        cells = cells + flip_cells
        if cfg.plots:
            lines += rp.embed(run_dir, "headline_flips.png", "Headline: flips from fixing truncation beside the paper",
                              *rp.flips_headline(cfg, flip_cells))
    if cfg.meta_runs or cfg.meta_paper:
        # One cell per measure of each named run (none for the paper's row: it is each cell's paper value)
        meta_cells, score_names = build_meta_cells(cfg)
        lines += render_meta(cfg, meta_cells, score_names)
        cells = cells + meta_cells
        if cfg.plots and cfg.meta_runs:
            lines += rp.embed(run_dir, "headline_meta.png", "Headline: meta-optimization beside the paper",
                              *rp.meta_headline(cfg, meta_cells))
    if cfg.plots:
        lines += ["## Plots", ""]
        for file, heading, fig, why in rp.distribution_plots(cfg, table):
            lines += rp.embed(run_dir, file, heading, fig, why)
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
    write_csv(run_dir / "report.csv", cells)
    return cells


def run(cfg: RootConfig, run_dir: Path) -> None:
    try:
        cells = make_report(cfg.report, run_dir, cfg.domain.name)
    except ReportError as err:
        log.error("%s", err)
        raise SystemExit(3) from None
    missing = sum(1 for c in cells if c.ours is None)
    log.info("report in %s (report.md, report.csv); %d of %d cells missing", run_dir, missing, len(cells))
    if cells and missing == len(cells) and not cfg.report.allow_empty:
        # An all-missing table almost always means mistyped run dirs; a pipeline should not carry on as if it worked.
        log.error("every cell of the report is missing (no eval, generate or meta_optimize run found: see report.md "
                  "for each cell's reason); fix report.runs (generate_runs, flips, meta_runs), or set "
                  "report.allow_empty=true to accept an empty report (exit code 2)")
        raise SystemExit(2)
    wandb_run = start_wandb(cfg, run_dir, job_type="report")
    if wandb_run is not None:
        log_to_wandb(wandb_run, cells, run_dir)


def log_to_wandb(wandb_run: Any, cells: list[Cell], run_dir: Path) -> None:
    """The report's cells as one table (``report/cells``: ours, stderr, n, paper, diff, source per cell) and every
    plot as an image (``report/<plot>``)."""
    # Imported here: wandb is heavy and only needed when a run logs to it
    import wandb

    table = wandb.Table(columns=["row", "column", "metric", "ours", "stderr", "n", "paper", "diff", "source"])
    for c in cells:
        table.add_data(c.row, c.column, c.metric, c.ours, c.stderr, c.n, c.paper, c.diff, c.source)
    logged: dict[str, Any] = {"report/cells": table}
    for png in sorted(run_dir.glob("*.png")):
        logged[f"report/{png.stem}"] = wandb.Image(str(png))
    wandb_run.log(logged)
    wandb_run.summary.update({"report/cells_missing": sum(1 for c in cells if c.ours is None),
                              "report/cells": len(cells)})
    wandb_run.finish()
