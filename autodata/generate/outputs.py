"""The end of a generate run: held-out split, datasets export and its card, stats.json and the summary table.

Everything is recomputed from the files in the run dir (not from in-memory
counters), so a resumed run reports on all its work, not just the last process's.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from autodata.config import ROLES, GenerateConfig, RootConfig
from autodata.corpus import Document
from autodata.domains import Domain, build_domain
from autodata.examples import to_example
from autodata.generate.card import write_card
from autodata.generate.documents import DocumentCap
from autodata.llm import LLM
from autodata.rundir import read_json_state, read_jsonl, rewrite_jsonl, write_json_atomic
# The one mean of the codebase; None for an empty list
from autodata.scoring import mean_or_none as _mean


def heldout_ids(ids: list[str], size: int, max_fraction: float, seed: int) -> set[str]:
    """A deterministic held-out subset: the same ids always land on the same side.

    >>> sorted(heldout_ids(["a", "b", "c", "d"], size=100, max_fraction=0.5, seed=0)) == sorted(
    ...     heldout_ids(["d", "c", "b", "a"], size=100, max_fraction=0.5, seed=0))
    True
    >>> len(heldout_ids([str(i) for i in range(10)], size=3, max_fraction=0.5, seed=0))
    3
    """
    n = min(size, math.floor(len(ids) * max_fraction))
    ranked = sorted(ids, key=lambda i: hashlib.sha1(f"{seed}:{i}".encode()).hexdigest())
    return set(ranked[:n])


def shares(counts: Counter) -> dict[str, float]:
    """Each key's share of the total; {} when there is nothing to share.

    >>> shares(Counter(too_easy=3, failed_qv=1))
    {'too_easy': 0.75, 'failed_qv': 0.25}
    """
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


# The fields of a rounds.jsonl row, and of each of its solver runs, that compute_stats reads: keep in step with it.
ROUND_STATS_FIELDS = ("document_id", "status", "reason", "tokens", "weak", "strong", "weak_mean", "strong_mean",
                      "warnings", "calls_saved", "calls_extra_challengers", "strong_skipped", "document_flags")
RUN_STATS_FIELDS = ("judge_error", "injection_flags")


def stats_view(row: dict[str, Any]) -> dict[str, Any]:
    """A round row without its texts (task, answers, feedback), all compute_stats needs: stage=merge holds every
    round of a sharded corpus in memory this way.

    >>> stats_view({"document_id": "d", "status": "rejected", "task": {"question": "..."},
    ...             "weak": [{"answer": "long text", "score": 0.0, "judge_error": None}]})
    {'document_id': 'd', 'status': 'rejected', 'weak': [{'judge_error': None}]}
    """
    view = {k: row[k] for k in ROUND_STATS_FIELDS if k in row}
    for side in ("weak", "strong"):
        if isinstance(view.get(side), list):
            view[side] = [{k: run[k] for k in RUN_STATS_FIELDS if k in run} for run in view[side]]
    return view


def compute_stats(rounds: list[dict], ledger: list[dict], accepted: list[dict], n_docs: int) -> dict[str, Any]:
    rejected = [r for r in rounds if r.get("status") == "rejected" and r.get("reason")]
    reasons = Counter(r["reason"] for r in rejected)
    # The paper's failure shares (80% too easy, 13% failed on strong, "of 880 pre-acceptance rounds") are over the
    # rounds before acceptance: the rejected rounds of documents that did produce a task. Documents that never
    # did (exhausted, unsuitable) would weigh in the hardest documents' failures.
    accepted_docs = {e.get("document_id") for e in accepted}
    before_acceptance = Counter(r["reason"] for r in rejected if r.get("document_id") in accepted_docs)
    per_role: dict[str, dict[str, int]] = {role: {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0} for role in ROLES}
    for row in rounds:
        for role, t in row.get("tokens", {}).items():
            slot = per_role.setdefault(role, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
            for key in slot:
                slot[key] += t.get(key, 0)
    judged = [r for r in rounds if r.get("weak")]
    weak_all = [m for r in judged if (m := r.get("weak_mean")) is not None]
    strong_all = [m for r in judged if (m := r.get("strong_mean")) is not None]
    weak_acc = [m for e in accepted if (m := e.get("weak_mean")) is not None]
    strong_acc = [m for e in accepted if (m := e.get("strong_mean")) is not None]
    gaps = [g for e in accepted if (g := e.get("gap")) is not None]
    statuses = Counter(row["status"] for row in ledger)
    # An "error" row records an outcome, but the document is redone on resume: not finished
    finished = len(ledger) - statuses.get("error", 0)
    # Every round of a cut document carries the warning: count documents, not rounds
    truncated = {r.get("document_id") for r in rounds if r.get("warnings")}
    return {
        "documents": n_docs,
        "documents_finished": finished,
        "documents_by_status": dict(statuses),
        "document_errors": statuses.get("error", 0),
        "accepted": len(accepted),
        "acceptance_rate": len(accepted) / finished if finished else 0.0,
        "rounds": len(rounds),
        "mean_rounds_per_accepted": _mean([float(e["rounds_used"]) for e in accepted]),
        "weak_mean_accepted": _mean(weak_acc),
        "strong_mean_accepted": _mean(strong_acc),
        "gap_mean_accepted": _mean(gaps),
        "weak_mean_all_rounds": _mean(weak_all),
        "strong_mean_all_rounds": _mean(strong_all),
        "failure_reasons": dict(reasons),
        "failure_reason_shares_all_rounds": shares(reasons),
        "rounds_before_acceptance": sum(before_acceptance.values()),
        "failure_reasons_before_acceptance": dict(before_acceptance),
        "failure_reason_shares": shares(before_acceptance),
        "calls_saved_early_exit": sum(r.get("calls_saved", 0) for r in rounds),
        "calls_extra_challengers": sum(r.get("calls_extra_challengers", 0) for r in rounds),
        "strong_runs_skipped_weak_failed": sum(r.get("strong_skipped", 0) for r in rounds),
        "judge_failures": sum(1 for r in rounds for s in (r.get("weak", []) + r.get("strong", [])) if s.get("judge_error")),
        # Solver runs the injection guard scored 0 without a judge call, and documents whose prompts fenced them
        # with a notice because they carry instructions (autodata/guard.py)
        "injection_flagged": {f"{side}_solver": sum(1 for r in rounds for s in r.get(side, [])
                                                    if s.get("injection_flags")) for side in ("weak", "strong")},
        "documents_injection_flagged": len({r["document_id"] for r in rounds if r.get("document_flags")}),
        "documents_truncated": len(truncated),
        "per_role": per_role,
    }


def write_splits(run_dir: Path, accepted: list[dict], gen: GenerateConfig, domain: Domain,
                 export: bool = True) -> tuple[list[dict], list[dict]]:
    """train.jsonl and heldout.jsonl (and dataset/ unless ``export`` is false) from every accepted example of
    the run dir; stage=merge draws the split of a sharded run's examples with it too. ``domain`` builds each
    example's solver prompt (the export's ``prompt`` column)."""
    held = heldout_ids([e["id"] for e in accepted], gen.heldout_size, gen.heldout_max_fraction, gen.seed)
    train_rows = [e for e in accepted if e["id"] not in held]
    heldout_rows = [e for e in accepted if e["id"] in held]
    rewrite_jsonl(run_dir / "train.jsonl", train_rows)
    rewrite_jsonl(run_dir / "heldout.jsonl", heldout_rows)
    if export:
        save_dataset(run_dir / "dataset", train_rows, heldout_rows, domain)
    return train_rows, heldout_rows


def finalize(cfg: RootConfig, run_dir: Path, docs: list[Document], skipped: dict[str, int], llm: LLM,
             wall_seconds: float, documents_not_started: int = 0,
             doc_cap: Optional[DocumentCap] = None, challengers: int = 1, domain: Optional[Domain] = None,
             export: bool = True) -> dict[str, Any]:
    """Write the split, the dataset, stats.json and the card. ``doc_cap`` is None when this process ran no
    document; the cap an earlier process recorded is kept then. ``export=False`` skips dataset/ and the card."""
    # Only what the stats read of each round (no task, answers or prompts): memory at the end of a long run
    # follows the rounds' count, not their text
    rounds = [stats_view(row) for row in read_jsonl(run_dir / "rounds.jsonl")]
    ledger = list(read_jsonl(run_dir / "documents.jsonl"))
    accepted = list(read_jsonl(run_dir / "accepted.jsonl"))

    train_rows, heldout_rows = write_splits(run_dir, accepted, cfg.generate,
                                            domain if domain is not None else build_domain(cfg.domain), export)
    stats = compute_stats(rounds, ledger, accepted, len(docs))
    target = cfg.generate.target_accepted
    previous = run_dir / "stats.json"
    earlier = read_json_state(previous, "and it is written again from the run's JSONL files (without the wall "
                                        "time, retry counts and document cap of earlier processes)")
    if not isinstance(earlier, dict):
        earlier = {}
    earlier_wall = float(earlier.get("wall_seconds_total", 0.0) or 0.0)
    # Faults the backends retried, by kind, over every process of the run (a resumed run adds to the earlier count)
    retries = Counter(earlier.get("retries") or {})
    retries.update(llm.retry_counts())
    stats.update({
        "method": cfg.method.name,
        "domain": cfg.domain.name,
        "train_examples": len(train_rows),
        "heldout_examples": len(heldout_rows),
        "documents_skipped": skipped,
        "target_accepted": target,
        "target_reached": None if target is None else len(accepted) >= target,
        # Left unstarted because the target was reached; a rerun with a larger target starts them
        "documents_not_started": documents_not_started,
        # Settings that change what the numbers mean (the paper's strong solver has no privileged access)
        "strong_sees_document": cfg.generate.strong_sees_document,
        "challengers_per_round": challengers,
        "document_cap": doc_cap.row() if doc_cap is not None else earlier.get("document_cap"),
        "wall_seconds": round(wall_seconds, 2),
        "wall_seconds_total": round(earlier_wall + wall_seconds, 2),
        "retries": dict(sorted(retries.items())),
        "this_process": {"per_role": llm.usage_summary(), "retries": llm.retry_counts()},
        "why_none_accepted": why_none_accepted(stats) if not accepted else None,
    })
    if domain is not None:
        # Which harness made the data (content hash of the editable templates and knobs), and any protected
        # template a template_dir replaced (domain.allow_protected_templates)
        stats["variant"] = {"id": domain.variant_id, "path": cfg.domain.variant}
        stats["protected_template_overrides"] = domain.protected_overrides
    write_json_atomic(previous, stats)
    if export:
        write_card(cfg, stats, run_dir)
    return stats


def target_status(stats: dict[str, Any]) -> Optional[str]:
    """One line on generate.target_accepted, or None without a target.

    >>> target_status({"accepted": 1312, "target_accepted": 1300, "target_reached": True,
    ...                "documents_not_started": 40, "documents_finished": 1960, "document_errors": 0})
    'accepted 1312 (target 1300, reached; 40 documents not started)'
    >>> target_status({"accepted": 12, "target_accepted": 1300, "target_reached": False,
    ...                "documents_not_started": 0, "documents_finished": 50, "document_errors": 0})
    'target 1300 not reached: corpus exhausted after 50 documents (12 accepted)'
    """
    target = stats.get("target_accepted")
    if target is None:
        return None
    if stats["target_reached"]:
        return (f"accepted {stats['accepted']} (target {target}, reached; "
                f"{stats['documents_not_started']} documents not started)")
    line = (f"target {target} not reached: corpus exhausted after {stats['documents_finished']} documents "
            f"({stats['accepted']} accepted)")
    if stats["document_errors"]:
        line += f"; {stats['document_errors']} documents ended in error and are redone when the same command is rerun"
    return line


def why_none_accepted(stats: dict[str, Any]) -> str:
    reasons = stats["failure_reasons"]
    if not reasons:
        return "no round was completed"
    top, count = max(reasons.items(), key=lambda kv: kv[1])
    return (f"no task separated the models: the most common failure was {top!r} ({count} of "
            f"{sum(reasons.values())} rounds); see failure_reasons and rounds.jsonl")


def save_dataset(path: Path, train: list[dict], heldout: list[dict], domain: Domain) -> None:
    """The splits as a ``datasets.DatasetDict`` in ``path`` (``datasets.load_from_disk`` reads it), every split
    with the columns of ``autodata/dataset_schema.py``, empty ones included."""
    import datasets

    from autodata.dataset_schema import features, to_record

    schema = features()

    def to_ds(rows: list[dict]) -> "datasets.Dataset":
        # The prompt stage=train builds from the same row (one function, so the two cannot drift)
        records = [to_record(r, to_example(r, domain)["prompt"]) for r in rows]
        if not records:
            return datasets.Dataset.from_dict({name: [] for name in schema}, features=schema)
        return datasets.Dataset.from_list(records, features=schema)

    splits = datasets.DatasetDict({"train": to_ds(train), "heldout": to_ds(heldout)})
    # save_to_disk writes no data file for an empty split unless asked to, and load_from_disk then fails on it
    splits.save_to_disk(str(path), num_shards={name: 1 for name, ds in splits.items() if len(ds) == 0})


def print_summary(stats: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    table = Table(title=f"generate: {stats['method']} / {stats['domain']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("documents", "documents_finished", "accepted", "acceptance_rate", "mean_rounds_per_accepted",
                "weak_mean_accepted", "strong_mean_accepted", "gap_mean_accepted", "calls_saved_early_exit",
                "calls_extra_challengers",
                "strong_runs_skipped_weak_failed", "judge_failures", "document_errors", "train_examples",
                "heldout_examples", "wall_seconds"):
        table.add_row(key, fmt(stats.get(key)))
    if stats.get("target_accepted") is not None:
        for key in ("target_accepted", "target_reached", "documents_not_started"):
            table.add_row(key, fmt(stats[key]))
    for reason, count in sorted(stats["failure_reasons"].items()):
        table.add_row(f"failed: {reason}", str(count))
    for kind, count in stats.get("retries", {}).items():
        table.add_row(f"retried: {kind}", str(count))
    console = Console()
    console.print(table)
    if target_status(stats):
        console.print(target_status(stats))
    if stats.get("why_none_accepted"):
        console.print(f"[yellow]{stats['why_none_accepted']}[/yellow]")
    console.print(f"outputs in {run_dir}")
