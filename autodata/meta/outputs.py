"""The end of a meta-optimization run: summary.json, the summary table and score.png, all from history.jsonl
(so a resumed run reports on every iteration, not just the last process's)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from autodata.config import MetaConfig
from autodata.meta.population import SCORES
from autodata.rundir import write_json_atomic

log = logging.getLogger(__name__)

# Rejections the guards made before any validation call (edits.py and the agents' output checks)
GUARD_KINDS = ("guard",)
PAPER = {"iterations": 233, "kept": 126, "kept_other_source": 124, "baseline_score": 0.621, "best_score": 0.796}
"""The paper's CS run: 233 iterations, 126 children kept (124 in another summary of the same run), validation pass
rate 62.1% -> 79.6% (about 6 hours)."""


def summarize(history: list[dict[str, Any]], baseline: Any, best: Any, meta: MetaConfig, failed: int) -> dict[str, Any]:
    rows = [r for r in history if r.get("iteration")]
    rejections = Counter(r["rejection"] for r in rows if r.get("rejection"))
    return {
        "iterations": len(rows),
        "iterations_planned": meta.iterations,
        "iterations_failed": failed,
        "kept": sum(1 for r in rows if r.get("kept")),
        "rejected": dict(sorted(rejections.items())),
        "rejected_by_guard": sum(rejections[k] for k in GUARD_KINDS),
        "flagged": sum(1 for r in rows if r.get("flags")),
        "score_name": meta.score,
        "score_definition": SCORES.get(meta.score, ""),
        "parent_reeval": meta.parent_reeval,
        "baseline_id": baseline.id,
        "baseline_score": baseline.score,
        "best_id": best.id,
        "best_score": best.score,
        "best_lineage": [*best.lineage, best.id],
        "seconds": round(sum(float(r.get("seconds") or 0.0) for r in rows), 1),
        "parent_rechecks": _rechecks(rows),
        "parent_reevals": _reevals(rows),
        "paper": PAPER,
    }


def _rechecks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    checks = [r["parent_recheck"] for r in rows if r.get("parent_recheck")]
    return {"count": len(checks), "matched": sum(1 for c in checks if c["matches"]),
            "model_calls": sum(c["model_calls"] for c in checks), "cached_calls": sum(c["cached_calls"] for c in checks)}


def _reevals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The fresh re-evaluations of parents (meta.parent_reeval=fresh) and the calls they cost."""
    runs = [r["parent_reeval"] for r in rows if isinstance(r.get("parent_reeval"), dict)]
    return {"count": len(runs), "model_calls": sum(int(r.get("model_calls") or 0) for r in runs),
            "cached_calls": sum(int(r.get("cached_calls") or 0) for r in runs),
            "changed_by": round(max((abs(r["mean"] - r["score_before"]) for r in runs
                                     if r.get("mean") is not None and r.get("score_before") is not None),
                                    default=0.0), 6)}


def finish(run_dir: Path, baseline: Any, best: Any, history: list[dict[str, Any]], meta: MetaConfig,
           failed: int) -> dict[str, Any]:
    summary = summarize(history, baseline, best, meta, failed)
    write_json_atomic(run_dir / "summary.json", summary)
    try:
        plot_scores(history, baseline.score, run_dir / "score.png")
    except Exception as err:  # noqa: BLE001 - a plot must never cost the run its summary
        log.warning("score.png not written: %s", err)
    print_summary(summary, run_dir)
    return summary


def plot_scores(history: list[dict[str, Any]], baseline: float, path: Path) -> None:
    """Each child's validation score by iteration (kept, rejected, flagged) and the best score so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in history if r.get("iteration")), key=lambda r: r["iteration"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, pick, style in (("kept", lambda r: r.get("kept"), dict(color="tab:green", marker="o")),
                               ("flagged", lambda r: r.get("flags") and not r.get("kept"),
                                dict(color="tab:red", marker="x")),
                               ("not kept", lambda r: not r.get("kept") and not r.get("flags"),
                                dict(color="tab:gray", marker=".")),):
        pts = [(r["iteration"], r["child_score"]) for r in rows if pick(r) and r.get("child_score") is not None]
        if pts:
            ax.scatter(*zip(*pts), label=label, **style)
    best, xs, ys = baseline or 0.0, [0], [baseline or 0.0]
    for r in rows:
        if r.get("kept") and r.get("child_score") is not None:
            best = max(best, r["child_score"])
        xs.append(r["iteration"])
        ys.append(best)
    ax.step(xs, ys, where="post", color="tab:blue", label="best so far")
    ax.axhline(baseline or 0.0, color="black", linestyle="--", linewidth=0.8, label="baseline")
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation score")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    table = Table(title="meta_optimize")
    table.add_column("")
    table.add_column("this run", justify="right")
    table.add_column("paper (CS)", justify="right")
    table.add_row("iterations", fmt(summary["iterations"]), str(PAPER["iterations"]))
    table.add_row("kept", fmt(summary["kept"]), f"{PAPER['kept']} (or {PAPER['kept_other_source']})")
    table.add_row("rejected by guard", fmt(summary["rejected_by_guard"]), "-")
    for kind, count in summary["rejected"].items():
        if kind not in GUARD_KINDS:
            table.add_row(f"rejected: {kind}", str(count), "-")
    table.add_row("flagged by the sabotage monitor", fmt(summary["flagged"]), "-")
    table.add_row(f"baseline {summary['score_name']}", fmt(summary["baseline_score"]), fmt(PAPER["baseline_score"]))
    table.add_row(f"best {summary['score_name']}", fmt(summary["best_score"]), fmt(PAPER["best_score"]))
    console = Console()
    console.print(table)
    console.print(f"{summary['score_name']}: {summary.get('score_definition') or ''}")
    again = summary.get("parent_reevals") or {}
    if again.get("count"):
        console.print(f"parent re-evaluations (fresh seeds): {again['count']}, {again['model_calls']} model calls")
    console.print(f"best variant {summary['best_id']} in {run_dir / 'best'}; use it with: python -m autodata.run "
                  f"stage=generate domain.variant={run_dir / 'best'}")
