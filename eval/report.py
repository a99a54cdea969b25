"""``stage=report``: our eval numbers beside the paper's, as report.md and report.csv.

    python -m autodata.run stage=report report=paper_cs hydra.run.dir=runs/report_cs \\
        '+report.runs={base/cot_test: runs/eval_base_cot, base/agentic_test: runs/eval_base_agentic}'

``report.runs`` maps a "row/column" label to an eval run dir (``'RUN_DIR#SET'``,
quoted, picks one set of a run that evaluated several; ``'RUN_DIR#SET@JUDGE'``
one judge of a run graded by several, e.g. ``@judge_kimi``; without it a cell
shows the run's primary judge; ``+`` because Hydra adds new keys to a dict only
with it). ``report=paper_cs`` brings the
paper's CS table (rows, columns, published numbers). Each cell shows, per metric,
our value with its standard error, the paper's value and the difference. A run
that is not named, or whose metrics.json is absent, says "missing": the paper's
number is never shown in its place.

``report.delta_metrics`` shows those metrics as differences from the
``report.delta_from`` row (the paper's science table gives avg@8 gains over the
base model). ``report.generate_runs`` adds the data-quality table
(``eval/report_tables.py``), ``report.flips`` the wrong-to-right flips and how many
came from fixing truncation (``eval/flips.py``), ``report.meta_runs`` the meta-optimization table of
``stage=meta_optimize`` runs beside ``report.meta_paper`` (``eval/report_meta.py``), and ``report.plots`` PNG plots
(``eval/plots.py``) embedded in report.md; a plot whose data is missing is named as skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

from autodata.config import ReportConfig, RootConfig
from autodata.tracking import start_wandb
# Cells live in their own module so report_tables.py and flips.py can use them without importing this one
from eval.cells import MISSING, Cell, ReportError, cell_text, parse_spec

log = logging.getLogger(__name__)


def load_run_metrics(spec: str) -> tuple[Optional[dict[str, Any]], str]:
    """The metrics of one set (and judge) of an eval run, or None and the reason it is missing."""
    path_text, dataset, judge = parse_spec(spec)
    metrics_path = Path(path_text) / "metrics.json"
    if not metrics_path.exists():
        return None, f"{metrics_path} not found (run stage=eval with hydra.run.dir={path_text})"
    try:
        sets = json.loads(metrics_path.read_text())["datasets"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return None, (f"{metrics_path} is not an eval metrics file ({type(err).__name__}: {err}); rerun stage=eval "
                      f"with hydra.run.dir={path_text} to rewrite it from samples.jsonl")
    if dataset:
        if dataset not in sets:
            return None, f"{metrics_path} has no set {dataset!r} (sets: {', '.join(sorted(sets))})"
        name = dataset
    elif len(sets) != 1:
        return None, (f"{metrics_path} has {len(sets)} sets ({', '.join(sorted(sets))}); name one as "
                      f"{path_text}#SET")
    else:
        (name,) = sets
    values = sets[name]
    if not judge:
        return values, f"{path_text}#{name}"
    by_judge = values.get("by_judge", {})
    if judge not in by_judge:
        return None, (f"{metrics_path} set {name!r} was not graded by judge {judge!r} (judges: "
                      f"{', '.join(sorted(by_judge)) or 'none recorded'}); add it to eval.judges and rerun eval "
                      f"with hydra.run.dir={path_text}")
    return {**values, **by_judge[judge]}, f"{path_text}#{name}@{judge}"


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
                cells.append(Cell(row, column, metric, ours, est.get("stderr"), published.get(metric), why,
                                  samples=(values or {}).get("samples"),
                                  judge_failures=(values or {}).get("judge_failures"), run=source))
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
            c.stderr = math.sqrt((c.stderr or 0.0) ** 2 + (b.stderr or 0.0) ** 2)
    return cells


def render_markdown(cfg: ReportConfig, rows: list[str], columns: list[str], cells: list[Cell]) -> str:
    title = lambda key: cfg.titles.get(key, key)  # noqa: E731
    index = {(c.row, c.column, c.metric): c for c in cells}
    lines = [f"# {cfg.title}", "",
             "Ours ± standard error over prompts, the paper's number, and ours minus the paper's.", ""]
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
        w.writerow(["row", "column", "metric", "ours", "stderr", "paper", "diff", "source"])
        for c in cells:
            w.writerow([c.row, c.column, c.metric, MISSING if c.ours is None else f"{c.ours:.6f}",
                        "" if c.stderr is None else f"{c.stderr:.6f}", "" if c.paper is None else c.paper,
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
    from eval.flips import flip_stats, load_samples

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
    cell = Cell(FLIP_ROW, label, "flips", stats.share_from_truncation, stats.stderr, paper, why)
    return cell, (f"{source} | {stats.pairs} ({stats.ungraded_pairs} ungraded left out) | {stats.wrong_to_right} | "
                  f"{stats.right_to_wrong}")


def make_plots(cfg: ReportConfig, run_dir: Path) -> list[str]:
    """Markdown lines embedding each plot, or naming it as skipped with the reason."""
    from eval import plots
    from eval.report_tables import read_accepted, weak_all_equal

    accepted = {name: read_accepted(Path(spec)) or [] for name, spec in cfg.generate_runs.items()}
    no_signal = {}
    for name, rows in accepted.items():
        flags = [f for f in (weak_all_equal(r) for r in rows) if f is not None]
        if flags:
            no_signal[name] = sum(flags) / len(flags)
    rates = {}
    for label, spec in cfg.runs.items():
        values, _ = load_run_metrics(spec)
        rate = ((values or {}).get("truncation_rate") or {}).get("value")
        if rate is not None:
            rates[label] = rate
    made = [("weak vs strong scores", plots.score_distributions(accepted, run_dir)),
            ("gap (strong - weak)", plots.histogram(accepted, "gap", "strong mean - weak mean",
                                                     run_dir / "gap_hist.png")),
            ("rounds per accepted example", plots.histogram(accepted, "rounds_used", "rounds used",
                                                             run_dir / "rounds_hist.png")),
            ("reward variance: weak samples all equal", plots.share_bars(
                no_signal, "share of accepted examples", run_dir / "weak_all_equal.png",
                "no accepted example has two or more weak scores")),
            ("truncation rate per model", plots.share_bars(rates, "truncation rate", run_dir / "truncation.png",
                                                           "no eval run has truncation_rate"))]
    lines = ["## Plots", ""]
    for name, (path, why) in made:
        lines += [f"### {name}", "", f"![{name}]({path})" if path else f"Skipped: {why}.", ""]
    return lines


def make_report(cfg: ReportConfig, run_dir: Path) -> list[Cell]:
    if not cfg.runs and not cfg.generate_runs and not cfg.flips and not cfg.meta_runs:
        raise ReportError("report.runs and report.generate_runs are empty: name eval runs, e.g. report=paper_cs "
                          "'+report.runs={base/cot_test: runs/eval_base_cot}' (stage=eval writes them), "
                          "or generate runs, e.g. '+report.generate_runs={cot: runs/cs_cot}', "
                          "or meta_optimize runs, e.g. '+report.meta_runs={ours: runs/meta_cs}'")
    from eval.report_tables import build_quality_cells, render_quality

    run_dir.mkdir(parents=True, exist_ok=True)
    rows, columns, cells = build_cells(cfg) if cfg.runs or cfg.paper else ([], [], [])
    md = render_markdown(cfg, rows, columns, cells)
    if cfg.generate_runs or cfg.quality_paper:
        quality_columns, quality_cells = build_quality_cells(cfg)
        md += "\n" + "\n".join(render_quality(cfg, quality_columns, quality_cells))
        cells = cells + quality_cells
    if cfg.flips or cfg.flips_paper:
        flip_lines, flip_cells = flip_section(cfg)
        md += "\n" + "\n".join(flip_lines)
        cells = cells + flip_cells
    if cfg.meta_runs or cfg.meta_paper:
        from eval.report_meta import build_meta_cells, render_meta

        # One cell per measure of each named run (none for the paper's row: it is each cell's paper value)
        meta_cells, score_names = build_meta_cells(cfg)
        md += "\n" + "\n".join(render_meta(cfg, meta_cells, score_names))
        cells = cells + meta_cells
    if cfg.plots:
        md += "\n" + "\n".join(make_plots(cfg, run_dir))
    (run_dir / "report.md").write_text(md, encoding="utf-8")
    write_csv(run_dir / "report.csv", cells)
    return cells


def run(cfg: RootConfig, run_dir: Path) -> None:
    try:
        cells = make_report(cfg.report, run_dir)
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
    """The report's cells as one table (``report/cells``: ours, stderr, paper, diff, source per cell) and every
    plot as an image (``report/<plot>``)."""
    import wandb

    table = wandb.Table(columns=["row", "column", "metric", "ours", "stderr", "paper", "diff", "source"])
    for c in cells:
        table.add_data(c.row, c.column, c.metric, c.ours, c.stderr, c.paper, c.diff, c.source)
    logged: dict[str, Any] = {"report/cells": table}
    for png in sorted(run_dir.glob("*.png")):
        logged[f"report/{png.stem}"] = wandb.Image(str(png))
    wandb_run.log(logged)
    wandb_run.summary.update({"report/cells_missing": sum(1 for c in cells if c.ours is None),
                              "report/cells": len(cells)})
    wandb_run.finish()
