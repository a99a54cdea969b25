"""Training examples from generate runs: find them, drop held-out ones, check fields, build policy prompts.

``train.dataset`` may name, per source:

- a generate run dir (``runs/cs_agentic``): its ``train.jsonl`` (the held-out
  split already removed), else ``accepted.jsonl``, else ``dataset/``;
- ``accepted.jsonl`` or ``train.jsonl`` of such a run;
- a saved ``datasets`` dir: a DatasetDict (its ``train`` split) or a Dataset.

A list of sources is the combined arm (concatenated). Whatever the form, ids in
the run's ``heldout.jsonl`` (or a DatasetDict's ``heldout`` split) are dropped:
the held-out examples are for evaluation and are never trained on.

The prompt the policy sees is the domain's solver prompt (the one the weak
solver answered during generation) rendered from the example's context and
question; TRL applies the policy's chat template to it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodata.dataset_schema import from_record, load_saved
from autodata.domains import Domain
# Example conversion is shared with stage=eval, so it lives in autodata; training keeps the reading of runs.
from autodata.examples import Source, field_problems, to_example
from autodata.rundir import read_jsonl

log = logging.getLogger(__name__)

PRODUCER = ("stage=generate writes training data into its run dir (accepted.jsonl, train.jsonl, dataset/): run "
            "python -m autodata.run stage=generate hydra.run.dir=runs/cs_agentic, then train.dataset=runs/cs_agentic")
FIELDS_PRODUCER = "these fields are written by stage=generate; " + PRODUCER


class DataError(ValueError):
    """The training data cannot be used; the message says what was expected, what was found and what to do."""


@dataclass
class TrainingData:
    # Rows ready for TRL: prompt (chat messages), task (JSON of the Task), example_id, source
    rows: list[dict[str, Any]]
    sources: list[Source] = field(default_factory=list)
    duplicates_dropped: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "examples": len(self.rows),
            "sources": [{"path": str(s.path), "read": s.kind, "examples": len(s.rows),
                         "heldout_dropped": s.heldout_dropped} for s in self.sources],
            "duplicates_dropped": self.duplicates_dropped,
        }

    def to_dataset(self):
        import datasets

        return datasets.Dataset.from_list(self.rows)


def as_paths(dataset: Any) -> list[str]:
    if isinstance(dataset, str):
        return [dataset]
    return [str(p) for p in (dataset or [])]


def load_training_data(dataset: Any, domain: Domain) -> TrainingData:
    """Every training example of the sources ``dataset`` names, with the policy prompt built."""
    paths = as_paths(dataset)
    if not paths:
        raise DataError(f"train.dataset is empty; {PRODUCER}")
    sources = [read_source(Path(p)) for p in paths]
    picked: list[tuple[dict[str, Any], Source]] = []
    seen: set[str] = set()
    duplicates = 0
    problems: list[str] = []
    for source in sources:
        problems += field_problems(source, domain)
        for row in source.rows:
            ident = str(row.get("id"))
            if ident in seen:
                duplicates += 1
                continue
            seen.add(ident)
            picked.append((row, source))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"the training data is missing fields the reward needs:\n{lines}\n{FIELDS_PRODUCER}")
    if duplicates:
        log.warning("train.dataset: dropped %d examples whose id appeared in an earlier source", duplicates)
    if not picked:
        raise DataError(_empty_message(sources))
    examples = [to_example(row, domain, source_name=str(source.path)) for row, source in picked]
    return TrainingData(examples, sources, duplicates)


def read_source(path: Path) -> Source:
    if not path.exists():
        raise DataError(f"train.dataset: {path} does not exist (looked in {path.resolve().parent}); {PRODUCER}")
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return _read_saved_dataset(path, heldout=_heldout_ids(path.parent))
        for name in ("train.jsonl", "accepted.jsonl"):
            if (path / name).exists():
                return read_source(path / name)
        if (path / "dataset").is_dir():
            return read_source(path / "dataset")
        raise DataError(f"train.dataset: {path} is a folder without train.jsonl, accepted.jsonl or dataset/; "
                        f"{PRODUCER}")
    if path.name == "heldout.jsonl":
        raise DataError(f"train.dataset: {path} is the held-out split, which is never trained on; point at the run's "
                        f"train.jsonl or accepted.jsonl ({path.parent})")
    if path.suffix != ".jsonl":
        raise DataError(f"train.dataset: {path} is not a .jsonl file or a folder; expected accepted.jsonl, "
                        "train.jsonl, a generate run dir or its dataset/ dir")
    heldout = _heldout_ids(path.parent)
    rows, dropped = [], 0
    for row in read_jsonl(path):
        if str(row.get("id")) in heldout:
            dropped += 1
            continue
        rows.append(row)
    return Source(path, path.name, rows, dropped)


def _heldout_ids(run_dir: Path) -> set[str]:
    ids = {str(r.get("id")) for r in read_jsonl(run_dir / "heldout.jsonl")}
    saved = run_dir / "dataset"
    if (saved / "dataset_dict.json").exists():
        ids |= _saved_split_ids(saved, "heldout")
    return ids


def _saved_split_ids(path: Path, split: str) -> set[str]:
    saved = load_saved(path)
    if split not in saved or "id" not in saved[split].column_names:
        return set()
    return {str(i) for i in saved[split]["id"]}


def _read_saved_dataset(path: Path, heldout: set[str]) -> Source:
    import datasets

    try:
        saved = load_saved(path)
    except (OSError, ValueError, FileNotFoundError) as err:
        raise DataError(f"train.dataset: could not load the saved dataset at {path}: {err}") from err
    kind = "dataset"
    if isinstance(saved, datasets.DatasetDict):
        if "train" not in saved:
            raise DataError(f"train.dataset: {path} is a DatasetDict with splits {list(saved)}, none named 'train'; "
                            "stage=generate saves train and heldout splits")
        if "heldout" in saved and "id" in saved["heldout"].column_names:
            heldout = heldout | {str(i) for i in saved["heldout"]["id"]}
        saved, kind = saved["train"], "dataset:train"
    rows, dropped = [], 0
    for row in saved:
        # Nested fields back to the row's shape (the current export's typed ones, an older export's JSON strings)
        row = from_record(row)
        if str(row.get("id")) in heldout:
            dropped += 1
            continue
        rows.append(row)
    return Source(path, kind, rows, dropped)


def _empty_message(sources: list[Source]) -> str:
    lines = []
    for s in sources:
        why = ""
        stats = (s.path if s.path.is_dir() else s.path.parent) / "stats.json"
        if stats.exists():
            try:
                reason = json.loads(stats.read_text()).get("why_none_accepted")
            except (OSError, ValueError):
                reason = None
            if reason:
                why = f" (its generate run says: {reason})"
        held = f", {s.heldout_dropped} held-out examples dropped" if s.heldout_dropped else ""
        lines.append(f"  - {s.path} ({s.kind}): 0 training examples{held}{why}")
    return ("train.dataset has no training examples:\n" + "\n".join(lines) + "\nRun stage=generate on more documents "
            "(corpus.limit) or with stronger models until accepted.jsonl has examples, then train on it.")


def prompts_per_step(completions_per_step: int, group_size: int) -> int:
    return completions_per_step // group_size


def check_enough(data: TrainingData, completions_per_step: int, group_size: int) -> None:
    """TRL drops an incomplete last batch: fewer prompts than one step needs would train on nothing."""
    need = prompts_per_step(completions_per_step, group_size)
    if len(data.rows) < need:
        raise DataError(
            f"train.dataset has {len(data.rows)} training examples but one optimizer step needs {need} prompts "
            f"({completions_per_step} completions / group of {group_size}); lower train.batch_size or add data"
        )
