"""Evaluation sets: where they are, which format they are in, and the solver prompt of each item.

``eval.datasets`` names, per set (``read_source``): a generate run dir (its ``heldout.jsonl``), a
.jsonl or .parquet file, a folder saved by ``datasets.save_to_disk`` (``DIR:SPLIT`` picks a split),
or ``hf://NAME[:SPLIT]`` for ``datasets.load_dataset``. Rows are in one of three formats:

- generate rows (``heldout.jsonl``): id, question, context, reference_answer, rubric;
- PRBench: the release's rows (``ScaleAI/PRBench``: ``task``, ``turns``, ``prompt_i`` / ``response_i`` /
  ``reference_texts_i``, a ``rubric`` of items {id, title, annotations}), read as the official harness
  (scaleapi/PRBench) reads them: the judge grades each item's ``title`` (``criteria_description`` is the
  annotator's rationale, kept but not sent), whose weight is the stored signed value of the field named
  after its ``weight_class`` ("critically important" -> ``critically_important_weight``); the last prompt
  is the question and the earlier turns are real chat turns, each turn's reference texts before its prompt.
  Or simpler rows with ``prompt`` and ``criteria`` (each {criterion | title | description, weight}).
  Graded by a rubric domain (domain=legal or cs);
- principia-bench: ``question`` or ``problem_statement``, and ``answer`` (or ``reference_answer``), no
  rubric; graded by domain=principia.

Every row becomes a generate-style row and goes through ``autodata.examples.to_example``, so the
evaluated model sees exactly the solver prompt that stage=train trains on.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from autodata.domains import Domain, Task
from autodata.examples import Source as Rows
from autodata.examples import field_problems, task_of, to_example

log = logging.getLogger(__name__)

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
    # Where the rows came from (a file, a saved dataset, an hf:// name)
    path: str
    # generate | prbench | principia
    format: str
    items: list[EvalItem]


def is_prbench_release_row(row: dict[str, Any]) -> bool:
    """A row of the PRBench release (``ScaleAI/PRBench``): a conversation in prompt_i / response_i columns and a
    rubric of annotated criteria."""
    return "prompt_0" in row and isinstance(row.get("rubric"), list)


def row_format(row: dict[str, Any]) -> str:
    """Which of the supported formats a row is in.

    >>> row_format({"prompt": "p", "criteria": []}), row_format({"question": "q", "answer": "a"})
    ('prbench', 'principia')
    >>> row_format({"task": "t", "prompt_0": "p", "rubric": []}), row_format({"problem_statement": "q", "answer": "a"})
    ('prbench', 'principia')
    """
    if ("criteria" in row and "prompt" in row) or is_prbench_release_row(row):
        return "prbench"
    if "rubric" in row:
        return "generate"
    if ("question" in row or "problem_statement" in row) and ("answer" in row or "reference_answer" in row):
        return "principia"
    return "unknown"


def _criterion(c: dict[str, Any]) -> dict[str, Any]:
    # A title is what PRBench grades; a description beside it is a rationale, so it comes last.
    text = c.get("criterion") or c.get("title") or c.get("description") or ""
    extra = {k: v for k, v in c.items() if k not in ("criterion", "description", "title", "weight", "category")}
    return {"criterion": str(text), "weight": float(c.get("weight", 0)), "category": str(c.get("category", "")),
            "extra": extra}


def prbench_weight(annotations: dict[str, Any]) -> float:
    """A PRBench criterion's weight: the stored value of the field named after its class, sign and all.

    The release spells classes with spaces and names the fields with underscores; the official harness maps
    one to the other and uses the stored value, so this does too.

    >>> prbench_weight({"weight_class": "critically important", "critically_important_weight": 9})
    9.0
    >>> prbench_weight({"weight_class": "slightly detrimental", "slightly_detrimental_weight": -2, "important_weight": None})
    -2.0
    """
    cls = str(annotations.get("weight_class") or "")
    key = f"{cls.replace(' ', '_')}_weight"
    value = annotations.get(key)
    if value is None:
        raise ValueError(f"criterion of weight_class {cls!r} has no {key}")
    return float(value)


def contradicts_class(weight_class: Any, weight: float) -> bool:
    """Whether a weight's sign disagrees with its class: detrimental classes are negative, important ones positive.

    >>> contradicts_class("slightly detrimental", 2.0), contradicts_class("critically important", 8.0)
    (True, False)
    """
    cls = str(weight_class or "")
    if "detrimental" in cls:
        return weight > 0
    if "important" in cls:
        return weight < 0
    return False


def _prbench_criterion(item: dict[str, Any]) -> dict[str, Any]:
    notes = item.get("annotations") or {}
    return {"criterion": str(item.get("title") or ""), "weight": prbench_weight(notes),
            "category": str(notes.get("criteria_category") or ""),
            # The description is the annotator's rationale; the harness never sends it to the grader.
            "extra": {"id": item.get("id"), "weight_class": notes.get("weight_class"),
                      "description": notes.get("criteria_description")}}


def with_references(texts: Any, prompt: str = "") -> str:
    """A turn's reference texts before its prompt, in the official harness's words.

    >>> with_references(["Rule 12: wages are due at once."], "Am I owed?")
    'Reference Text 0:\\nRule 12: wages are due at once.\\n\\nAm I owed?'
    """
    refs = "".join(f"Reference Text {i}:\n{t}\n\n" for i, t in enumerate(texts or []))
    return (refs + prompt).strip()


def prbench_conversation(row: dict[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    """(earlier messages, context, question) of a PRBench conversation.

    The last prompt is the question and its turn's reference texts the context (the solver prompt puts them
    before it); each earlier turn is a user message (its reference texts, then its prompt) and, when the row
    has one, the assistant's response.
    """
    turns = int(row.get("turns") or sum(1 for k in row if k.startswith("prompt_") and row[k]))
    if turns < 1:
        raise ValueError("the row has no prompt (turns is 0 and every prompt_i is empty)")
    empty = [f"prompt_{i}" for i in range(turns) if not row.get(f"prompt_{i}")]
    if empty:
        raise ValueError(f"turns is {turns} but {', '.join(empty)} is empty")
    messages = []
    for i in range(turns - 1):
        messages.append({"role": "user", "content": with_references(row.get(f"reference_texts_{i}"),
                                                                    str(row[f"prompt_{i}"]))})
        # As in the harness, a turn stored without a response adds no assistant message.
        if row.get(f"response_{i}"):
            messages.append({"role": "assistant", "content": str(row[f"response_{i}"])})
    last = turns - 1
    return messages, with_references(row.get(f"reference_texts_{last}")), str(row[f"prompt_{last}"])


def normalize(row: dict[str, Any], fmt: str, index: int) -> dict[str, Any]:
    """A generate-style row (id, question, context, reference_answer, rubric) from any supported format."""
    ident = row.get("id", row.get("task_id", row.get("task", f"row{index}")))
    if fmt == "prbench" and is_prbench_release_row(row):
        try:
            earlier, context, question = prbench_conversation(row)
            rubric = [_prbench_criterion(c) for c in row["rubric"]]
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"task {ident}: {err}") from None
        return {"id": str(ident), "question": question, "context": context, "reference_answer": "",
                "rubric": rubric, "earlier_messages": earlier}
    if fmt == "prbench":
        return {"id": str(ident), "question": row["prompt"], "context": row.get("context") or "",
                "reference_answer": row.get("reference_answer") or "",
                "rubric": [_criterion(c) for c in row.get("criteria") or []]}
    if fmt == "principia":
        return {"id": str(ident), "question": row.get("question", row.get("problem_statement")),
                "context": row.get("context") or "",
                "reference_answer": str(row.get("reference_answer", row.get("answer", "")))}
    return {**row, "id": str(ident)}


HUB_PREFIX = "hf://"
# The NAME of a NAME=SOURCE entry in eval.datasets
SET_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class Source:
    """Where a set's rows come from: a label for metrics.json, the set's name and the rows."""

    label: str
    name: str
    rows: list[dict[str, Any]]


def _split_of(dataset: Any, split: str, where: str) -> Any:
    """One split of a loaded ``datasets`` object (a Dataset is returned as it is)."""
    from datasets import DatasetDict

    if not isinstance(dataset, DatasetDict):
        return dataset
    if split:
        if split not in dataset:
            raise EvalDataError(f"eval.datasets: {where} has no split {split!r} (splits: {', '.join(dataset)})")
        return dataset[split]
    if len(dataset) != 1:
        raise EvalDataError(f"eval.datasets: {where} has splits {', '.join(dataset)}; name one as {where}:SPLIT")
    return next(iter(dataset.values()))


def read_source(given: str) -> Source:
    """The rows named by one ``eval.datasets`` entry.

    A generate run dir (its heldout.jsonl), a .jsonl or .parquet file, a folder saved by
    ``datasets.save_to_disk`` (``DIR:SPLIT`` picks a split), or ``hf://NAME[:SPLIT]`` for
    ``datasets.load_dataset`` (a hub id, from the local cache when offline, or a local dataset folder).
    ``A+B`` is one set of both sources' rows, named ``nameA+nameB`` (the science table's combined validation
    set: the held-out examples of the CoT and the agentic run). ``NAME=SOURCE`` names the set NAME, so a
    report can refer to it whatever the source is called (``cot_test=runs/cs_cot``).
    """
    name, sep, rest = given.partition("=")
    if sep and SET_NAME.fullmatch(name) and not Path(given).exists():
        source = read_source(rest)
        return Source(source.label, name, source.rows)
    if "+" in given and not Path(given).exists():
        parts = [read_source(part) for part in given.split("+")]
        return Source(given, "+".join(p.name for p in parts), [row for p in parts for row in p.rows])
    if given.startswith(HUB_PREFIX):
        from datasets import load_dataset

        name, _, split = given[len(HUB_PREFIX):].partition(":")
        try:
            loaded = load_dataset(name, split=split or None)
        except Exception as err:  # noqa: BLE001 - the datasets library raises many kinds; say which and why
            raise EvalDataError(f"eval.datasets: {given} could not be loaded with datasets.load_dataset "
                                f"({type(err).__name__}: {err}); on a machine without the hub, download it first "
                                "and point at the saved folder or a parquet file") from None
        rows = _split_of(loaded, split, given).to_list()
        return Source(given, "_".join(p for p in (Path(name).name, split) if p), rows)
    path, split = Path(given), ""
    if not path.exists() and ":" in given:
        head, _, split = given.rpartition(":")
        path = Path(head)
    if not path.exists():
        raise EvalDataError(f"eval.datasets: {path} does not exist (looked in {path.resolve().parent}); {PRODUCER}")
    if path.is_dir():
        if (path / "heldout.jsonl").exists():
            if split:
                raise EvalDataError(f"eval.datasets: {given}: {path} is a generate run dir, which has one held-out "
                                    f"set and no splits; name it as {path}")
            return Source(str(path / "heldout.jsonl"), path.name, read_rows(path / "heldout.jsonl"))
        if any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
            from datasets import load_from_disk

            rows = _split_of(load_from_disk(str(path)), split, str(path)).to_list()
            return Source(given, "_".join(p for p in (path.name, split) if p), rows)
        raise EvalDataError(f"eval.datasets: {path} is a folder without heldout.jsonl and not a saved `datasets` "
                            f"folder; point at a generate run dir, a .jsonl or .parquet file; {PRODUCER}")
    if path.suffix == ".jsonl":
        return Source(str(path), path.stem, read_rows(path))
    if path.suffix == ".parquet":
        from datasets import Dataset

        return Source(str(path), path.stem, Dataset.from_parquet(str(path)).to_list())
    raise EvalDataError(f"eval.datasets: {path} is not a .jsonl or .parquet file, a saved `datasets` folder or a "
                        "generate run dir")


def local_paths(given: str) -> list[Path]:
    """The files or folders of this machine one ``eval.datasets`` entry reads (none for hf:// names).

    >>> local_paths("cot_test=runs/a+runs/b")
    [PosixPath('runs/a'), PosixPath('runs/b')]
    """
    name, sep, rest = given.partition("=")
    if sep and SET_NAME.fullmatch(name) and not Path(given).exists():
        given = rest
    parts = given.split("+") if "+" in given and not Path(given).exists() else [given]
    return [Path(p.rpartition(":")[0] if not Path(p).exists() and ":" in p else p)
            for p in parts if not p.startswith(HUB_PREFIX)]


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
    source = read_source(given)
    file, raw = source.label, source.rows
    if not raw:
        raise EvalDataError(f"eval.datasets: {file} has no rows; {PRODUCER}")
    # A folder domain reads rows in its own columns (domain.yaml's eval section); a generate run's rows as any domain
    reads_own = getattr(domain, "reads_eval_row", None)
    formats = {"folder"} if reads_own is not None and all(reads_own(r) for r in raw) else {row_format(r) for r in raw}
    if "unknown" in formats or len(formats) > 1:
        raise EvalDataError(
            f"eval.datasets: {file} has rows in formats {sorted(formats)}; every row must be one of: generate "
            "(question + rubric), prbench (prompt + criteria) or principia (question + answer)"
            + (", or the columns of domain.yaml's eval section" if reads_own is not None else ""))
    fmt = formats.pop()
    try:
        rows = [domain.eval_row(r, i) if fmt == "folder" else normalize(r, fmt, i) for i, r in enumerate(raw)]
    except (ValueError, KeyError, TypeError) as err:
        raise EvalDataError(f"eval.datasets: {file} has a {fmt} row that cannot be read ({err})") from None
    # PRBench grades by its rubric alone: it ships no reference answer.
    optional = ("reference_answer",) if fmt == "prbench" else ()
    problems = field_problems(Rows(Path(file), fmt, rows), domain, optional=optional)
    if fmt == "principia" and domain.grading == "rubric":
        problems = [f"{file}: principia-style items (question + answer, no rubric) need the equivalence judge; "
                    f"add domain=principia to the command (found domain={domain.name})"]
    if fmt == "prbench" and domain.grading != "rubric":
        problems.append(f"{file}: PRBench-style items are rubric-graded; add domain=legal (found domain={domain.name})")
    if fmt == "prbench":
        warn_contradicting_signs(file, rows)
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
    return EvalSet(source.name, file, fmt, items)


def warn_contradicting_signs(file: str, rows: list[dict[str, Any]]) -> None:
    """One warning per set, with a count, when stored weights disagree in sign with their class (the stored
    weights are used all the same, as in the official harness)."""
    found = [(r["id"], c) for r in rows for c in r["rubric"]
             if contradicts_class((c.get("extra") or {}).get("weight_class"), c["weight"])]
    if found:
        ident, c = found[0]
        total = sum(len(r["rubric"]) for r in rows)
        log.warning("%s: %d of %d criteria have a weight whose sign contradicts their weight_class (first: task %s, "
                    "%r, class %r, weight %+g); the stored weights are used, as the official PRBench harness does",
                    file, len(found), total, ident, c["criterion"], c["extra"]["weight_class"], c["weight"])


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
