"""Which numbers each plot of ``stage=report`` shows (``eval/plots.py`` draws them).

A headline plot per table, from the table's own cells (so the plot and the table cannot disagree): ours with
standard-error whiskers and n beside the paper's, one panel per metric. Then the distributions behind the
data-quality table: weak and strong scores, gap and rounds of accepted examples (with the run's acceptance
thresholds and the paper's numbers as lines), the share of examples with no reward variance, and the truncation
rate of every eval run with its standard error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from autodata.config import ReportConfig, RootConfig
from eval import plots
from eval.cells import Cell, load_run_metrics, read_accepted, run_config
from eval.plots import Bars, Line
from eval.report_meta import META_TITLES, SCORE_MEASURES
from eval.report_tables import QUALITY_ROWS, QualityTable

# (file name, markdown heading) of each plot that is not a headline, in report order
DISTRIBUTIONS = (("scores_weak_strong.png", "weak vs strong scores"), ("gap_hist.png", "gap (strong - weak)"),
                 ("rounds_hist.png", "rounds per accepted example"),
                 ("weak_all_equal.png", "reward variance: weak samples all equal"),
                 ("truncation.png", "truncation rate per model"))


def bars(title: str, ylabel: str, cells: list[Cell], group: Callable[[Cell], str],
         xlabel: str = "row / column of the table") -> Bars:
    return Bars(title, ylabel, [group(c) for c in cells], [c.ours for c in cells], [c.stderr for c in cells],
                [c.n for c in cells], [c.paper for c in cells], xlabel)


def eval_headline(cfg: ReportConfig, cells: list[Cell]) -> tuple[Optional[Any], str]:
    """The eval table: a panel per metric, a pair of bars per (row, column)."""
    title = lambda key: cfg.titles.get(key, key)  # noqa: E731
    panels = []
    for metric in cfg.metrics:
        chosen = [c for c in cells if c.metric == metric]
        delta = f" (difference from {title(cfg.delta_from)})" if cfg.delta_from and metric in cfg.delta_metrics else ""
        panels.append(bars(f"{metric}{delta}", metric, chosen, lambda c: f"{title(c.row)} / {title(c.column)}"))
    return plots.headline(panels, f"{cfg.title}: ours vs the paper")


def quality_headline(cfg: ReportConfig, table: QualityTable) -> tuple[Optional[Any], str]:
    """The data-quality table: a 0-1 panel of scores and shares per generate column, and rounds per accepted example
    of every column on a panel of its own."""
    title = lambda key: cfg.titles.get(key, key)  # noqa: E731
    panels = [bars(title(column), "score or share", [c for c in table.cells if c.column == column
                                                     and QUALITY_ROWS[c.row].unit == "score"],
                   lambda c: QUALITY_ROWS[c.row].title, "measure") for column in table.columns]
    panels.append(bars("rounds per accepted example", "rounds",
                       [c for c in table.cells if QUALITY_ROWS[c.row].unit == "rounds"], lambda c: title(c.column),
                       "generate run"))
    return plots.headline(panels, "Data quality of the generated data: ours vs the paper")


def flips_headline(cfg: ReportConfig, cells: list[Cell]) -> tuple[Optional[Any], str]:
    """The flips table: per set, the share of wrong-to-right flips that came from fixing truncation."""
    title = "Wrong-to-right flips that came from fixing truncation"
    return plots.headline([bars(title, "share of wrong-to-right flips", cells,
                                lambda c: cfg.titles.get(c.column, c.column), "set")], title)


def meta_headline(cfg: ReportConfig, cells: list[Cell]) -> tuple[Optional[Any], str]:
    """The meta-optimization table's validation scores (baseline, best, gain) per run; counts are not plotted."""
    title = "Meta-optimization: validation scores"
    scores = [c for c in cells if c.row in SCORE_MEASURES]
    return plots.headline([bars(title, "validation score", scores,
                                lambda c: f"{META_TITLES[c.row]} / {cfg.titles.get(c.column, c.column)}",
                                "measure / run")], title)


def threshold_lines(run_cfg: Optional[RootConfig], keys: tuple[str, ...]) -> list[Line]:
    """The acceptance thresholds among ``keys`` that the run's policy applies, as lines. None for a CoT run (its rule
    is recorded, never applied) or a run without config.yaml."""
    if run_cfg is None or run_cfg.method.name == "cot":
        return []
    acc = run_cfg.domain.acceptance
    # Which thresholds each policy reads (autodata/acceptance.py)
    applied = {"cs_paper": ("weak_max", "strong_min", "min_gap"),
               "cs_deployed": ("weak_max", "strong_min", "strong_max", "min_gap"),
               "legal_gap": ("weak_max", "min_gap")}.get(acc.policy, ())
    # A threshold opened to the end of the score's range (weak_max 1.0, strong_min 0.0, min_gap -1.0) binds nothing
    binds = {"weak_max": lambda v: v < 1.0, "strong_max": lambda v: v < 1.0, "strong_min": lambda v: v > 0.0,
             "min_gap": lambda v: v > -1.0}
    return [Line(getattr(acc, key), f"{acc.policy} {key} {getattr(acc, key):g}", kind="threshold")
            for key in keys if key in applied and binds[key](getattr(acc, key))]


def distribution_plots(cfg: ReportConfig, table: Optional[QualityTable]) -> list[tuple[str, str, Optional[Any], str]]:
    """(file, heading, figure or None, why skipped) of each distribution plot."""
    title = lambda key: cfg.titles.get(key, key)  # noqa: E731
    accepted = {name: read_accepted(Path(spec)) or [] for name, spec in cfg.generate_runs.items()}
    configs = {name: run_config(Path(spec)) for name, spec in cfg.generate_runs.items()}
    paper = cfg.quality_paper

    def paper_line(name: str, key: str) -> list[Line]:
        value = paper.get(name, {}).get(key)
        return [] if value is None else [Line(value, f"paper {title(name)} {QUALITY_ROWS[key].title} {value:g}")]

    score_lines = {name: threshold_lines(configs[name], ("weak_max", "strong_min", "strong_max"))
                   + paper_line(name, "weak_mean") + paper_line(name, "strong_mean") for name in accepted}
    gap_lines = [line for name in accepted for line in
                 threshold_lines(configs[name], ("min_gap",)) + paper_line(name, "gap")]
    rounds_lines = [line for name in accepted for line in paper_line(name, "rounds_per_accepted")]
    for name, run_cfg in configs.items():
        if run_cfg is not None and run_cfg.method.name != "cot" and accepted[name]:
            rounds_lines.append(Line(run_cfg.generate.max_rounds, f"{title(name)} round cap "
                                     f"{run_cfg.generate.max_rounds}", kind="threshold"))

    def values(key: str) -> dict[str, list[float]]:
        return {name: [float(r[key]) for r in rows if r.get(key) is not None] for name, rows in accepted.items()}

    no_signal = {title(c.column): (c.ours, c.stderr, c.n) for c in (table.cells if table else [])
                 if c.row == "share_weak_all_equal" and c.ours is not None}
    no_signal_paper = {title(name): v["share_weak_all_equal"] for name, v in paper.items()
                       if "share_weak_all_equal" in v}
    rates, rates_paper = {}, {}
    for label, spec in cfg.runs.items():
        values_of_run, _ = load_run_metrics(spec)
        est = (values_of_run or {}).get("truncation_rate") or {}
        if est.get("value") is not None:
            row, _, column = label.rpartition("/")
            shown = f"{title(row)} / {title(column)}"
            rates[shown] = (est["value"], est.get("stderr") if (est.get("n") or 0) > 1 else None, est.get("n"))
            if cfg.paper.get(label, {}).get("truncation_rate") is not None:
                rates_paper[shown] = cfg.paper[label]["truncation_rate"]
    made = [plots.score_distributions(accepted, score_lines, cfg.titles),
            plots.histogram(values("gap"), title="Gap (strong mean - weak mean) of accepted examples",
                            xlabel="strong mean - weak mean", lines=gap_lines, titles=cfg.titles,
                            missing="no accepted example has gap"),
            plots.histogram(values("rounds_used"), title="Rounds the loop needed per accepted example",
                            xlabel="rounds used", integer=True, lines=rounds_lines, titles=cfg.titles,
                            missing="no accepted example has rounds_used"),
            plots.share_bars(no_signal, no_signal_paper, title="Accepted examples whose weak samples all score "
                             "the same (no GRPO signal)", ylabel="share of accepted examples",
                             missing="no accepted example has two or more weak scores"),
            plots.share_bars(rates, rates_paper, title="Truncation rate: completions that hit the token budget",
                             ylabel="truncation rate", missing="no eval run has truncation_rate")]
    return [(file, heading, fig, why) for (file, heading), (fig, why) in zip(DISTRIBUTIONS, made)]


def embed(run_dir: Path, file: str, heading: str, fig: Optional[Any], why: str, level: str = "###") -> list[str]:
    """Save a figure and return the markdown that shows it, or the line that names it as skipped."""
    if fig is None:
        return [f"{level} {heading}", "", f"Skipped: {why}.", ""]
    plots.save(fig, run_dir / file)
    return [f"{level} {heading}", "", f"![{heading}]({file})", ""]
