"""Evaluation sets: where they are, which format they are in, and the solver prompt of each item.

``eval.datasets`` names, per set:

- a generate run dir (``runs/cs_agentic``): its ``heldout.jsonl``;
- a JSONL file in one of three formats, recognised row by row:
  - generate rows (``heldout.jsonl``): id, question, context, reference_answer, rubric;
  - PRBench-style rubric tasks: ``prompt`` and ``criteria`` (a list of {criterion | description | title, weight,
    weight_class?}), optionally ``reference_answer``; graded by a rubric domain (domain=legal or cs);
  - principia-bench-style verifiable items: ``question`` and ``answer`` (or ``reference_answer``), no rubric;
    graded by domain=principia.

Every row becomes a generate-style row and goes through ``training.data.to_example``, so the
evaluated model sees exactly the solver prompt that stage=train trains on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from autodata.domains import Domain, Task
from training.data import RUBRIC_DOMAINS, Source, field_problems, task_of, to_example

PRODUCER = ("held-out sets come from stage=generate (runs/<name>/heldout.jsonl): run python -m autodata.run "
            "stage=generate hydra.run.dir=runs/cs_agentic, then eval.datasets=[runs/cs_agentic]")


class EvalDataError(ValueError):
    """An evaluation set cannot be used; the message says what was expected, what was found and what to do."""


@dataclass
class EvalItem:
    id: str
    # The solver's chat messages (the domain's solver prompt, no source document)
    prompt: list[dict[str, str]]
    task: Task


@dataclass
class EvalSet:
    name: str
    path: Path
    # generate | prbench | principia
    format: str
    items: list[EvalItem]


def row_format(row: dict[str, Any]) -> str:
    """Which of the three formats a row is in.

    >>> row_format({"prompt": "p", "criteria": []}), row_format({"question": "q", "answer": "a"})
    ('prbench', 'principia')
    """
    if "criteria" in row and "prompt" in row:
        return "prbench"
    if "rubric" in row:
        return "generate"
    if "question" in row and ("answer" in row or "reference_answer" in row):
        return "principia"
    return "unknown"


def _criterion(c: dict[str, Any]) -> dict[str, Any]:
    text = c.get("criterion") or c.get("description") or c.get("title") or ""
    extra = {k: v for k, v in c.items() if k not in ("criterion", "description", "title", "weight", "category")}
    return {"criterion": str(text), "weight": float(c.get("weight", 0)), "category": str(c.get("category", "")),
            "extra": extra}


def normalize(row: dict[str, Any], fmt: str, index: int) -> dict[str, Any]:
    """A generate-style row (id, question, context, reference_answer, rubric) from any supported format."""
    ident = row.get("id", row.get("task_id", f"row{index}"))
    if fmt == "prbench":
        return {"id": str(ident), "question": row["prompt"], "context": row.get("context") or "",
                "reference_answer": row.get("reference_answer") or "",
                "rubric": [_criterion(c) for c in row.get("criteria") or []]}
    if fmt == "principia":
        return {"id": str(ident), "question": row["question"], "context": row.get("context") or "",
                "reference_answer": str(row.get("reference_answer", row.get("answer", "")))}
    return {**row, "id": str(ident)}


def resolve(path: Path) -> Path:
    if not path.exists():
        raise EvalDataError(f"eval.datasets: {path} does not exist (looked in {path.resolve().parent}); {PRODUCER}")
    if path.is_dir():
        held = path / "heldout.jsonl"
        if not held.exists():
            raise EvalDataError(f"eval.datasets: {path} is a folder without heldout.jsonl; point at a generate run "
                                f"dir or a .jsonl file; {PRODUCER}")
        return held
    if path.suffix != ".jsonl":
        raise EvalDataError(f"eval.datasets: {path} is not a .jsonl file or a generate run dir")
    return path


def set_name(given: Path, file: Path) -> str:
    """A run dir or its heldout.jsonl is named after the run; any other file after its stem."""
    return file.parent.name if file.name == "heldout.jsonl" else file.stem


def read_rows(file: Path) -> list[dict[str, Any]]:
    """Every row of a JSONL eval set; a line that is not a JSON object is an error naming the line (an eval set
    is input, not a log: skipping a row would change the benchmark silently)."""
    rows = []
    with file.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise EvalDataError(f"eval.datasets: {file} line {line_no} is not valid JSON ({err.msg} at column "
                                    f"{err.colno}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise EvalDataError(f"eval.datasets: {file} line {line_no} is a JSON {type(row).__name__}, not an "
                                    "object; each line must be one item")
            rows.append(row)
    return rows


def load_set(given: str, domain: Domain, limit: Optional[int] = None) -> EvalSet:
    file = resolve(Path(given))
    raw = read_rows(file)
    if not raw:
        raise EvalDataError(f"eval.datasets: {file} has no rows; {PRODUCER}")
    formats = {row_format(r) for r in raw}
    if "unknown" in formats or len(formats) > 1:
        raise EvalDataError(
            f"eval.datasets: {file} has rows in formats {sorted(formats)}; every row must be one of: generate "
            "(question + rubric), prbench (prompt + criteria) or principia (question + answer)")
    fmt = formats.pop()
    rows = [normalize(r, fmt, i) for i, r in enumerate(raw)]
    problems = field_problems(Source(file, fmt, rows), domain.name)
    if fmt == "principia" and domain.name in RUBRIC_DOMAINS:
        problems = [f"{file}: principia-style items (question + answer, no rubric) need the equivalence judge; "
                    f"add domain=principia to the command (found domain={domain.name})"]
    if fmt == "prbench" and domain.name not in RUBRIC_DOMAINS:
        problems.append(f"{file}: PRBench-style items are rubric-graded; add domain=legal (found domain={domain.name})")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        problems.append(f"{file}: {len(ids) - len(set(ids))} duplicate ids; each prompt needs its own id")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise EvalDataError(f"eval.datasets: the set cannot be graded:\n{lines}")
    if limit is not None:
        rows = rows[:limit]
    items = []
    for row in rows:
        ex = to_example(row, domain, source_name=str(file))
        items.append(EvalItem(ex["example_id"], ex["prompt"], task_of(ex["task"])))
    return EvalSet(set_name(Path(given), file), file, fmt, items)


def load_sets(paths: list[str], domain: Domain, limit: Optional[int] = None) -> list[EvalSet]:
    if not paths:
        raise EvalDataError(f"eval.datasets is empty: name at least one held-out set, e.g. "
                            f"eval.datasets=[runs/cs_agentic] or eval.datasets=[data/prbench_legal.jsonl]; {PRODUCER}")
    sets = [load_set(p, domain, limit) for p in paths]
    names = [s.name for s in sets]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise EvalDataError(f"eval.datasets: several sets are named {clashes} (a set is named after its run dir or "
                            "file stem); copy or rename one file so each set has its own name")
    return sets
