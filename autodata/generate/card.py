"""The dataset card (``dataset/README.md``): what a generate run made, how, and with which models.

The card is in the Hugging Face dataset-card format, its metadata built with ``huggingface_hub``'s
``DatasetCardData`` (license from ``generate.license``, language, task and size categories, the source
dataset), so the folder can be pushed as is and the hub shows it. It is rendered from the run's config and
the stats ``finalize`` computed, never from in-memory counters, so a resumed run's card describes all of its
work. It goes to the hub, so nothing in it names this machine or its network: endpoints contribute only their
backend and model name, and the commands and settings it shows pass through ``autodata.redact`` (URLs,
hosts, paths and secrets become ``<url>``, ``<host>``, ``<path>``, ``<redacted>``).
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf

from autodata.config import ROLES, AcceptanceConfig, CorpusConfig, RootConfig, endpoint_for
from autodata.dataset_schema import COLUMNS, type_text
from autodata.hub_ids import repo_id_problem
from autodata.provenance import leaves
from autodata.redact import redact_argv, redact_value

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


# The method's paper; its first authors as the paper lists them (the rest: "others")
CITATION = """@misc{kulikov2026autodata,
  title = {Autodata: An Agentic Data Scientist to Create High Quality Synthetic Data},
  author = {Kulikov and Whitehouse and Wu and Nie and others},
  year = {2026},
  eprint = {2606.25996},
  archivePrefix = {arXiv},
  note = {FAIR at Meta}
}"""
TASK_CATEGORIES = ["question-answering", "text-generation"]
# Generate settings that may differ between the shards of one run (stage=merge) and that the card's settings leave
# out: they change how a run went or where it is published, not what its data means.
PER_SHARD_GENERATE = ("max_docs_in_flight", "solver_wave", "target_accepted", "push_to_hub", "hub_private",
                      "allow_document_errors", "license", "license_name", "license_link", "language")
# Endpoint settings that shape the data; the rest (URLs, keys, concurrency, devices) are each run's own
DATA_ENDPOINT_FIELDS = ("model", "temperature", "top_p", "max_tokens")


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


def published_command(argv: list[str]) -> str:
    """``command_line`` with URLs, hosts, paths and secrets redacted, for the card.

    >>> published_command(["/x/autodata/run.py", "stage=generate", "corpus.path=/data/papers", "generate.seed=1"])
    "python -m autodata.run stage=generate 'corpus.path=<path>' generate.seed=1"
    """
    return command_line([argv[0], *redact_argv(argv[1:])])


def run_commands(run_dir: Path) -> list[str]:
    """The commands that made the run dir, one per distinct start (resumes with other overrides show up),
    redacted for publishing."""
    starts: list[dict] = []
    info = run_dir / "run_info.json"
    if info.exists():
        try:
            starts = json.loads(info.read_text()).get("starts", [])
        except (json.JSONDecodeError, AttributeError):
            starts = []
    commands = [published_command(s["argv"]) for s in starts if s.get("argv")] or [published_command(sys.argv)]
    return [c for i, c in enumerate(commands) if c not in commands[:i]]


def data_settings(cfg: RootConfig) -> dict[str, Any]:
    """The settings that shape a run's data, by dotted key: the domain, method, corpus (but its shard) and generate
    settings (but PER_SHARD_GENERATE), and each role's DATA_ENDPOINT_FIELDS. The shards of one run must agree on
    them (stage=merge), and the card shows them (redacted)."""
    tree = OmegaConf.to_container(OmegaConf.structured(cfg))
    out = dict(leaves(tree["domain"], "domain"))
    out.update(leaves(tree["method"], "method"))
    out.update((f"corpus.{k}", v) for k, v in tree["corpus"].items() if k != "shard")
    out.update((f"generate.{k}", v) for k, v in tree["generate"].items() if k not in PER_SHARD_GENERATE)
    for role in ROLES:
        endpoint = endpoint_for(cfg.models, role)
        out.update((f"models.roles.{role}.{k}", getattr(endpoint, k)) for k in DATA_ENDPOINT_FIELDS)
    return out


def hub_dataset_id(corpus: CorpusConfig) -> Optional[str]:
    """The hub dataset a corpus was read from, or None (a local folder or file, the embedded pydoc, or an hf
    corpus given as a local path, which the card must not show)."""
    path = corpus.path or ""
    if corpus.source != "hf" or repo_id_problem(path) or Path(path).expanduser().exists():
        return None
    return path


def corpus_text(cfg: RootConfig) -> str:
    c = cfg.corpus
    hub_id = hub_dataset_id(c)
    if hub_id is not None:
        source = f"the hub dataset `{hub_id}`, split `{c.split}`"
    elif c.source == "pydoc":
        source = "the Python Language Reference (embedded, `pydoc`)"
    else:
        source = f"a local `{c.source}` corpus (its path is not published)"
    return source + ", " + (f"first {c.limit} documents by id" if c.limit is not None else "every document")


def license_text(cfg: RootConfig) -> str:
    gen = cfg.generate
    if gen.license == "unknown":
        return ("Not set (`generate.license`, default `unknown`). The terms of the data follow those of the source "
                "corpus and of the models above; set `generate.license` (a hub license id, or `other` with "
                "`generate.license_name` and `generate.license_link`) before publishing.")
    named = f" ({gen.license_name}: {gen.license_link})" if gen.license_name or gen.license_link else ""
    return (f"`{gen.license}`{named}. The terms of the source corpus and of the models above apply to the data "
            "as well.")


def card_data(cfg: RootConfig, stats: dict[str, Any]):
    """The card's metadata (``huggingface_hub.DatasetCardData``)."""
    from huggingface_hub import DatasetCardData

    gen = cfg.generate
    splits = {"train": stats["train_examples"], "heldout": stats["heldout_examples"]}
    filled = [s for s, n in splits.items() if n]
    hub_id = hub_dataset_id(cfg.corpus)
    extra: dict[str, Any] = {k: v for k, v in (("license_name", gen.license_name), ("license_link", gen.license_link))
                             if v is not None}
    if filled:
        # Paths as DatasetDict.push_to_hub lays them out on the hub (the local folder is save_to_disk's layout,
        # read with datasets.load_from_disk). Empty splits are not pushed, so they are not listed.
        extra["configs"] = [{"config_name": "default",
                             "data_files": [{"split": s, "path": f"data/{s}-*"} for s in filled]}]
        extra["dataset_info"] = {"splits": [{"name": s, "num_examples": splits[s]} for s in filled]}
    return DatasetCardData(
        license=gen.license,
        language=list(gen.language),
        pretty_name=f"autodata {cfg.method.name} / {cfg.domain.name}",
        task_categories=list(TASK_CATEGORIES),
        size_categories=[size_category(stats["accepted"])],
        source_datasets=[hub_id] if hub_id else ["original"],
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated"],
        multilinguality="monolingual" if len(gen.language) == 1 else "multilingual",
        tags=["synthetic", "autodata", cfg.method.name, cfg.domain.name],
        **extra,
    )


def _num(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_card(cfg: RootConfig, stats: dict[str, Any], commands: list[str]) -> str:
    """The card's text; ``commands`` are already redacted (``run_commands``)."""
    from huggingface_hub import DatasetCard

    repo = cfg.generate.push_to_hub
    data = card_data(cfg, stats)
    models = "\n".join(f"| {role} | {e.backend} | {redact_value('model', e.model)} |"
                       for role, e in ((r, endpoint_for(cfg.models, r)) for r in ROLES))
    load = (f'datasets.load_dataset("{repo}")' if repo
            else 'datasets.load_from_disk("dataset")  # the run dir\'s dataset/')
    made_by = "\n".join(commands)
    settings = yaml.safe_dump({k: redact_value(k, v) for k, v in data_settings(cfg).items()}, sort_keys=False,
                              allow_unicode=True, width=1000).strip()
    columns = "\n".join(f"| `{name}` | {type_text(spec)} | {what} |" for name, spec, what in COLUMNS)
    target = cfg.generate.target_accepted
    target_line = "" if target is None else (
        f"| target accepted | {target} ({'reached' if stats.get('target_reached') else 'not reached'}) |\n")
    body = f"""# {repo or data.pretty_name}

Synthetic {cfg.domain.name} tasks (question, reference answer, weighted rubric) made by autodata with the
**{cfg.method.name}** method.

```python
import datasets

ds = {load}
```

Every split has the same columns (below). `prompt` is the solver prompt as chat messages, the column TRL's
`GRPOTrainer` reads as its prompt (`GRPOTrainer(model=..., reward_funcs=..., train_dataset=ds["train"])`);
autodata's `stage=train` rewards completions with a judge that grades them against `rubric`.

## How it was made

{method_text(cfg, stats.get("challengers_per_round", 1))}

**Acceptance rule** ({'applied' if cfg.method.name == 'agentic' else 'recorded'}; every score is computed by the
framework from the judge's per-criterion verdicts): {acceptance_rule(cfg.domain.acceptance)}

**Source corpus**: {corpus_text(cfg)}.

**Command** (one line per start of the run; URLs, hosts, paths and secrets are shown as `<url>`, `<host>`,
`<path>`, `<redacted>`):

```bash
{made_by}
```

<details>
<summary>Settings that shaped the data (redacted the same way)</summary>

```yaml
{settings}
```

</details>

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

The `heldout` split is for evaluation only; never train on it.

## Columns

| column | type | contents |
|---|---|---|
{columns}

## License

{license_text(cfg)}

## Citation

The method (Agentic Self-Instruct, Autodata; Kulikov et al., FAIR at Meta, 2026):

```bibtex
{CITATION}
```
"""
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def write_card(cfg: RootConfig, stats: dict[str, Any], run_dir: Path) -> Path:
    path = run_dir / "dataset" / "README.md"
    path.write_text(render_card(cfg, stats, run_commands(run_dir)), encoding="utf-8")
    return path
