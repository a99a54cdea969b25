"""PNG plots for ``stage=report`` (matplotlib, Agg backend: no display needed).

Each function takes plain data and returns a matplotlib Figure, every axes with a title and axis labels, or None
with the reason when its data is missing, so the report can say which plot was skipped; ``save`` writes and closes
one. ``headline`` is a table's comparison: our bars with standard-error whiskers and n beside the paper's. The
histograms of two runs share their bins (integer bins for rounds), and vertical lines mark the acceptance
thresholds and the paper's numbers where they apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

OURS, PAPER = "tab:blue", "tab:gray"


@dataclass
class Bars:
    """One panel of a headline plot: per group, our value (standard error, n) beside the paper's."""

    title: str
    ylabel: str
    groups: list[str]
    ours: list[Optional[float]]
    stderr: list[Optional[float]]
    n: list[Optional[int]]
    paper: list[Optional[float]]
    xlabel: str = "row / column of the table"


@dataclass
class Line:
    """A vertical line on a histogram: an acceptance threshold (solid) or a paper number (dashed)."""

    x: float
    label: str
    kind: str = "paper"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out: Path) -> str:
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)
    return out.name


def headline(panels: list[Bars], title: str) -> tuple[Optional[Any], str]:
    """Grouped bars, one panel per metric: ours with standard-error whiskers and "n=..." above, the paper's beside
    it; a group without our number says "missing" (never the paper's number in its place)."""
    panels = [p for p in panels if p.groups]
    if not any(v is not None for p in panels for v in p.ours + p.paper):
        return None, "no number of ours or the paper's to compare"
    plt = _pyplot()
    width = max(6.5, sum(0.9 * len(p.groups) + 1.0 for p in panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        xs = list(range(len(panel.groups)))
        heights = [v if v is not None else 0.0 for v in panel.ours]
        errors = [e if e is not None else 0.0 for e in panel.stderr]
        ax.bar([x - 0.2 for x in xs], heights, 0.4, yerr=errors, capsize=3, color=OURS, label="ours ± s.e.")
        ax.bar([x + 0.2 for x in xs], [v if v is not None else 0.0 for v in panel.paper], 0.4, color=PAPER,
               label="paper")
        top = max([abs(v) for v in panel.ours + panel.paper if v is not None] or [1.0])
        for x, value, error, n in zip(xs, panel.ours, panel.stderr, panel.n):
            text = ("n/a (n=0)" if n == 0 else "missing") if value is None else ("" if n is None else f"n={n}")
            y = 0.0 if value is None else value + (error or 0.0)
            ax.text(x - 0.2, y + 0.02 * top, text, ha="center", va="bottom", fontsize=7)
        for x, value in zip(xs, panel.paper):
            if value is None:
                ax.text(x + 0.2, 0.02 * top, "not published", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xticks(xs)
        ax.set_xticklabels(panel.groups, rotation=30, ha="right", fontsize=8)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel)
        ax.set_xlabel(panel.xlabel)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.legend(fontsize=7)
    if len(panels) > 1 or panels[0].title != title:
        fig.suptitle(title)
    return fig, ""


def _lines(ax: Any, lines: list[Line]) -> None:
    for i, line in enumerate(lines):
        style = "-" if line.kind == "threshold" else "--"
        color = "tab:red" if line.kind == "threshold" else f"C{2 + i % 6}"
        ax.axvline(line.x, linestyle=style, color=color, linewidth=1.2, label=line.label)


def score_distributions(runs: dict[str, list[dict]], lines: dict[str, list[Line]],
                        titles: dict[str, str]) -> tuple[Optional[Any], str]:
    """Weak and strong mean scores of accepted examples, one panel per generate run, on shared 0-1 bins, with the
    run's acceptance thresholds and the paper's means."""
    runs = {k: v for k, v in runs.items() if v}
    if not runs:
        return None, "no generate run with accepted examples"
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.4), squeeze=False)
    bins = [i / 10 for i in range(11)]
    for ax, (name, rows) in zip(axes[0], runs.items()):
        for key, label in (("weak_mean", "weak"), ("strong_mean", "strong")):
            ax.hist([r[key] for r in rows if r.get(key) is not None], bins=bins, alpha=0.6, label=label)
        _lines(ax, lines.get(name, []))
        ax.set_title(f"{titles.get(name, name)}: {len(rows)} accepted")
        ax.set_xlabel("mean rubric score of the solver's runs")
        ax.set_ylabel("accepted examples")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7)
    fig.suptitle("Weak and strong solver scores of accepted examples")
    return fig, ""


def shared_bins(data: dict[str, list[float]], integer: bool, count: int = 10,
                span: tuple[float, ...] = ()) -> list[float]:
    """One set of bin edges for every run: unit bins centred on integers for counts, else ``count`` equal bins over
    the range of all runs' values together; ``span``: further values the range must reach (the lines drawn).

    >>> shared_bins({"a": [1, 3], "b": [2]}, integer=True)
    [0.5, 1.5, 2.5, 3.5]
    >>> shared_bins({"a": [0.0], "b": [1.0]}, integer=False, count=2)
    [0.0, 0.5, 1.0]
    >>> shared_bins({"a": [1]}, integer=True, span=(2.6,))
    [0.5, 1.5, 2.5, 3.5]
    """
    values = [x for xs in data.values() for x in xs] + list(span)
    low, high = min(values), max(values)
    if integer:
        return [k - 0.5 for k in range(round(low), round(high) + 2)]
    if high == low:
        low, high = low - 0.05, high + 0.05
    return [low + (high - low) * i / count for i in range(count + 1)]


def histogram(data: dict[str, list[float]], *, title: str, xlabel: str, integer: bool = False,
              lines: Optional[list[Line]] = None, titles: Optional[dict[str, str]] = None,
              missing: str = "no values") -> tuple[Optional[Any], str]:
    """Overlaid histograms of one value, one per generate run, on shared bins."""
    data = {k: v for k, v in data.items() if v}
    if not data:
        return None, missing
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    bins = shared_bins(data, integer, span=tuple(line.x for line in lines or []))
    for name, xs in data.items():
        ax.hist(xs, bins=bins, alpha=0.6, label=f"{(titles or {}).get(name, name)} (n={len(xs)})")
    _lines(ax, lines or [])
    if integer:
        ax.set_xticks([int(b + 0.5) for b in bins[:-1]])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accepted examples")
    ax.legend(fontsize=7)
    return fig, ""


def share_bars(shares: dict[str, tuple[float, Optional[float], Optional[int]]], paper: dict[str, float], *,
               title: str, ylabel: str, missing: str) -> tuple[Optional[Any], str]:
    """One bar per run (label -> share in [0, 1], its standard error and n), with the paper's share beside it where
    it published one."""
    if not shares:
        return None, missing
    labels = list(shares)
    panel = Bars(title, ylabel, labels, [shares[k][0] for k in labels], [shares[k][1] for k in labels],
                 [shares[k][2] for k in labels], [paper.get(k) for k in labels])
    panel.xlabel = "run"
    fig, why = headline([panel], title)
    if fig is not None:
        fig.axes[0].set_ylim(0, 1.1)
    return fig, why
