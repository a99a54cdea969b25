"""PNG plots for ``stage=report`` (matplotlib, Agg backend: no display needed).

Each function writes one file and returns its name, or returns None with the
reason when its data is missing, so the report can say which plot was skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path) -> str:
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)
    return out.name


def score_distributions(accepted: dict[str, list[dict]], out_dir: Path) -> tuple[Optional[str], str]:
    """Weak and strong mean scores of accepted examples, one panel per generate run."""
    runs = {k: v for k, v in accepted.items() if v}
    if not runs:
        return None, "no generate run with accepted examples"
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3), squeeze=False)
    bins = [i / 10 for i in range(11)]
    for ax, (name, rows) in zip(axes[0], runs.items()):
        for key, label in (("weak_mean", "weak"), ("strong_mean", "strong")):
            ax.hist([r[key] for r in rows if r.get(key) is not None], bins=bins, alpha=0.6, label=label)
        ax.set_title(f"{name}: scores of accepted examples")
        ax.set_xlabel("mean rubric score")
        ax.legend()
    return _save(fig, out_dir / "scores_weak_strong.png"), ""


def histogram(accepted: dict[str, list[dict]], key: str, xlabel: str, out: Path,
              bins: Any = 10) -> tuple[Optional[str], str]:
    """A histogram of one accepted.jsonl field, all generate runs overlaid."""
    data = {k: [float(r[key]) for r in v if r.get(key) is not None] for k, v in accepted.items()}
    data = {k: v for k, v in data.items() if v}
    if not data:
        return None, f"no accepted example has {key}"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    for name, xs in data.items():
        ax.hist(xs, bins=bins, alpha=0.6, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accepted examples")
    ax.legend()
    return _save(fig, out), ""


def share_bars(shares: dict[str, float], ylabel: str, out: Path, missing: str) -> tuple[Optional[str], str]:
    """One bar per run (label -> a share in [0, 1]); ``missing`` is the reason given when there is none."""
    if not shares:
        return None, missing
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(shares)), 3))
    ax.bar(list(shares), list(shares.values()))
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelrotation=30)
    return _save(fig, out), ""
