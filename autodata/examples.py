"""Example rows <-> tasks: the conversion stage=train and stage=eval both need.

A row (a line of accepted.jsonl / heldout.jsonl, or an eval set's row read into that shape) becomes one
example: the policy's chat prompt (the domain's solver prompt, the one the weak solver answered during
generation) and the task the judge grades against, JSON-encoded so TRL can carry it as a column.
Both stages go through ``to_example``, so the evaluated model sees exactly the prompt stage=train trains
on. It lives here, not in training/ or eval/, because stages sit level with each other and share what they
share through ``autodata``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodata.dataset_schema import from_record
from autodata.domains import Domain, Task

# Fields every example needs, and the ones rubric-graded domains add.
REQUIRED_FIELDS = ("id", "question", "reference_answer")
RUBRIC_FIELDS = ("rubric",)


@dataclass
class Source:
    """Rows read from one place, before they become examples."""

    path: Path
    # What was read: train.jsonl, accepted.jsonl, dataset:train, an eval set's format, ...
    kind: str
    rows: list[dict[str, Any]]
    heldout_dropped: int = 0


def field_problems(source: Source, domain: Domain, optional: tuple[str, ...] = ()) -> list[str]:
    """One line per missing field (with how many rows lack it) and per domain mismatch; ``optional`` fields
    may be empty."""
    if not source.rows:
        return []
    # The grading kind is the domain class's own fact: a rubric judge needs a rubric in every row.
    extra = RUBRIC_FIELDS if domain.grading == "rubric" else ()
    required = [f for f in REQUIRED_FIELDS + extra if f not in optional]
    problems = []
    for name in required:
        lacking = sum(1 for r in source.rows if r.get(name) in (None, "", []))
        if lacking:
            share = "every row" if lacking == len(source.rows) else f"{lacking} of {len(source.rows)} rows"
            problems.append(f"{source.path}: field {name!r} is missing or empty in {share}")
    found = sorted({str(r["domain"]) for r in source.rows if r.get("domain")})
    wrong = [d for d in found if d != domain.name]
    if wrong:
        problems.append(f"{source.path}: examples are from domain {', '.join(found)} but domain.name={domain.name}; "
                        f"the judge must be that domain's (add domain={wrong[0]} to the command)")
    return problems


def to_example(row: dict[str, Any], domain: Domain, source_name: str = "") -> dict[str, Any]:
    """One TRL row: the policy's chat prompt and the task the judge grades against (a multi-turn eval row's
    ``earlier_messages`` become real turns of the prompt; generate rows have none). ``row`` may be a record of
    the datasets export too (its JSON-string fields are decoded)."""
    row = from_record(row)
    task = Task.from_dict({"context": row.get("context") or "", **{k: row[k] for k in (
        "question", "reference_answer", "rubric", "question_type", "tags", "extra", "earlier_messages")
        if row.get(k) is not None}})
    return {
        "prompt": domain.solver_messages(task, None),
        "task": json.dumps(task.to_dict(), ensure_ascii=False),
        "example_id": str(row["id"]),
        "source": source_name,
    }


def task_of(encoded: str) -> Task:
    """The task ``to_example`` encoded into its ``task`` column."""
    return Task.from_dict(json.loads(encoded))
