"""The dataset card (``dataset/README.md``): what a generate run made, how, and with which models.

The card is in the Hugging Face dataset-card format (YAML metadata between ``---`` lines, then
markdown), so the folder can be pushed as is and the hub shows it. It is rendered from the run's
config and the stats ``finalize`` computed, never from in-memory counters, so a resumed run's card
describes all of its work. Endpoints contribute only their backend and model name: no URL, no key.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import yaml

from autodata.config import ROLES, AcceptanceConfig, RootConfig, endpoint_for

# The hub's size_categories buckets, as (upper bound, label).
SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                (10_000_000, "1M<n<10M"))

# One sentence per acceptance policy, filled from its thresholds (autodata/acceptance.py states the same rules).
RULES = {
    "cs_paper": "strong mean >= {strong_min}, weak mean < {weak_max}, gap (strong mean - weak mean) >= {min_gap}",
    "cs_deployed": ("weak mean <= {weak_max} and no weak run > {weak_run_max}; {strong_window}; "
                    "gap (strong mean - weak mean) >= {min_gap}"),
    "legal_gap": "weak mean < {weak_max}, gap (strong mean - weak mean) >= {min_gap}",
    "loop_judge": ("no score threshold: the loop judge reads every weak and strong rollout with its rubric score "
                   "and says accept or improve (improve when unsure); the hard rules (question length, case recap, "
                   "exam style) force improve"),
    "verifiable": ("weak solver correct in at most {weak_max_correct} of its runs, strong solver in at least "
                   "{strong_min_correct}"),
}


def size_category(n: int) -> str:
    """The hub's size bucket for ``n`` examples.

    >>> size_category(0), size_category(1000), size_category(250_000), size_category(10**8)
    ('n<1K', '1K<n<10K', '100K<n<1M', 'n>10M')
    """
    for bound, label in SIZE_BUCKETS:
        if n < bound:
            return label
    return "n>10M"


def acceptance_rule(acc: AcceptanceConfig) -> str:
    """The rule in words with its thresholds.

    >>> acceptance_rule(AcceptanceConfig(policy="cs_paper"))
    'cs_paper: strong mean >= 0.65, weak mean < 0.5, gap (strong mean - weak mean) >= 0.2'
    """
    template = RULES.get(acc.policy)
    if template is None:  # a policy this card does not know: state every threshold rather than guess
        return f"{acc.policy}: " + ", ".join(f"{k}={v}" for k, v in asdict(acc).items() if k != "policy")
    # cs_deployed's strong_max of 1.0 or more turns its too-easy guard off.
    strong_window = (f"{acc.strong_min} <= strong mean < {acc.strong_max}" if acc.strong_max < 1.0
                     else f"strong mean >= {acc.strong_min}")
    rule = template.format(**asdict(acc), strong_window=strong_window)
    if acc.policy == "cs_deployed" and acc.reject_zero_runs:
        rule += "; no run of either solver scores 0"
    if acc.policy == "legal_gap" and acc.require_loop_judge_accept:
        rule += "; and the loop judge says accept (it can only veto)"
    return f"{acc.policy}: {rule}"


def method_text(cfg: RootConfig, challengers: int = 1) -> str:
    """``challengers``: challengers per agentic round as the run resolved it (stats.json ``challengers_per_round``)."""
    if cfg.method.name == "cot":
        kept = ("every task that parses is kept" if cfg.method.cot_filter == "none"
                else f"tasks are kept by the `{cfg.method.cot_filter}` filter on the strong solver's runs")
        return (f"CoT Self-Instruct baseline: one challenger call per document, no solver feedback; {kept}. "
                "The acceptance rule below is recorded per example, not applied.")
    writers = ("a challenger writes" if challengers == 1 else
               f"{challengers} challengers write at once (the lowest-numbered that passes the checks is used)")
    sees = "sees" if cfg.generate.strong_sees_document else "does not see"
    return (f"Agentic Self-Instruct: per source document {writers} a question, reference answer and "
            "weighted rubric; a quality verifier checks it; weak and strong solvers answer it "
            f"({cfg.generate.weak_samples} and {cfg.generate.strong_samples} runs; every accepted example has all "
            f"of them, fewer only for rejected tasks; the strong solver {sees} the source document); a judge grades "
            "every answer criterion by criterion; the framework keeps the task only when the acceptance rule "
            "below holds, otherwise the feedback writer diagnoses the failure and the challenger tries a new "
            f"question (at most {cfg.generate.max_rounds} rounds per document).")


def command_line(argv: list[str]) -> str:
    """``sys.argv`` of ``python -m autodata.run`` as a command to paste (argv[0] is the module's file path).

    >>> command_line(["/x/autodata/run.py", "stage=generate", "corpus.path=/data/my papers"])
    "python -m autodata.run stage=generate 'corpus.path=/data/my papers'"
    """
    return " ".join(["python -m autodata.run", *map(shlex.quote, argv[1:])])


def run_commands(run_dir: Path) -> list[str]:
    """The commands that made the run dir, one per distinct start (resumes with other overrides show up)."""
    starts: list[dict] = []
    info = run_dir / "run_info.json"
    if info.exists():
        try:
            starts = json.loads(info.read_text()).get("starts", [])
        except (json.JSONDecodeError, AttributeError):
            starts = []
    commands = [command_line(s["argv"]) for s in starts if s.get("argv")] or [command_line(sys.argv)]
    return [c for i, c in enumerate(commands) if c not in commands[:i]]


def corpus_text(cfg: RootConfig) -> str:
    c = cfg.corpus
    parts = [f"source `{c.source}`"]
    if c.path is not None:
        parts.append(f"path `{c.path}`" + (f", split `{c.split}`" if c.source == "hf" else ""))
    parts.append(f"first {c.limit} documents by id" if c.limit is not None else "every document")
    return ", ".join(parts)


def _num(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_card(cfg: RootConfig, stats: dict[str, Any], commands: list[str]) -> str:
    repo = cfg.generate.push_to_hub
    splits = {"train": stats["train_examples"], "heldout": stats["heldout_examples"]}
    meta: dict[str, Any] = {
        "license": "other",
        "pretty_name": f"autodata {cfg.method.name} / {cfg.domain.name}",
        "task_categories": ["question-answering", "text-generation"],
        "tags": ["synthetic", "autodata", cfg.method.name, cfg.domain.name],
        "size_categories": [size_category(stats["accepted"])],
    }
    filled = [s for s, n in splits.items() if n]
    if filled:
        # Paths as DatasetDict.push_to_hub lays them out on the hub (the local folder is save_to_disk's layout,
        # read with datasets.load_from_disk). Empty splits are not pushed, so they are not listed.
        meta["configs"] = [{"config_name": "default",
                            "data_files": [{"split": s, "path": f"data/{s}-*"} for s in filled]}]
        meta["dataset_info"] = {"splits": [{"name": s, "num_examples": splits[s]} for s in filled]}
    models = "\n".join(f"| {role} | {e.backend} | {e.model} |"
                       for role, e in ((r, endpoint_for(cfg.models, r)) for r in ROLES))
    corpus = cfg.corpus
    load = (f'datasets.load_dataset("{repo}")' if repo else 'datasets.load_from_disk("dataset")')
    made_by = "\n".join(commands)
    target = cfg.generate.target_accepted
    target_line = "" if target is None else (
        f"| target accepted | {target} ({'reached' if stats.get('target_reached') else 'not reached'}) |\n")
    body = f"""# {repo or meta['pretty_name']}

Synthetic {cfg.domain.name} tasks (question, reference answer, weighted rubric) made by autodata with the
**{cfg.method.name}** method. Load with `{load}`.

## How it was made

{method_text(cfg, stats.get("challengers_per_round", 1))}

**Acceptance rule** ({'applied' if cfg.method.name == 'agentic' else 'recorded'}; every score is computed by the
framework from the judge's per-criterion verdicts): {acceptance_rule(cfg.domain.acceptance)}

**Source corpus**: {corpus_text(cfg)}.

**Command** (one line per start of the run; the same command again resumes it):

```bash
{made_by}
```

## Models

| role | backend | model |
|---|---|---|
{models}

## Counts

| quantity | value |
|---|---|
| source documents | {stats['documents']} |
| documents finished | {stats['documents_finished']} |
| accepted examples | {stats['accepted']} |
{target_line}| train split | {stats['train_examples']} |
| heldout split | {stats['heldout_examples']} |
| mean rounds per accepted example | {_num(stats['mean_rounds_per_accepted'])} |
| weak solver mean (accepted) | {_num(stats['weak_mean_accepted'])} |
| strong solver mean (accepted) | {_num(stats['strong_mean_accepted'])} |
| gap mean (accepted) | {_num(stats['gap_mean_accepted'])} |

The `heldout` split is for evaluation only; never train on it. Nested fields (`rubric`, `loop_judge`) are
JSON strings. The license of the data depends on the source corpus and on the terms of the models above.
"""
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def write_card(cfg: RootConfig, stats: dict[str, Any], run_dir: Path) -> Path:
    path = run_dir / "dataset" / "README.md"
    path.write_text(render_card(cfg, stats, run_commands(run_dir)), encoding="utf-8")
    return path
