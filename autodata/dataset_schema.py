"""The columns of a generate run's ``datasets`` export (``dataset/``, and the hub dataset pushed from it).

Declared once, in ``COLUMNS``: ``features()`` builds the ``datasets.Features`` every split is saved with (so
an empty split has the same columns and types as a full one, and loads), and the dataset card lists the
columns from the same tuple. A row of ``accepted.jsonl`` becomes a record with ``to_record``; ``from_record``
turns a record (this export's, or an older one's whose nested fields were JSON strings) back into the row.

Nested fields are typed: ``rubric`` is a list of structs, ``loop_judge`` a struct, ``prompt`` a list of chat
messages (the column a stock TRL ``GRPOTrainer`` reads). ``extra`` is the one JSON-string field, at the top
level and in each criterion: what a domain adds there varies (legal criteria: number, capability,
weight_class), and a JSON object keeps all of it without a column per domain.

``datasets`` is imported inside the functions that need it, so reading this module costs a stage nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from autodata.domains.legal import LOOP_JUDGE_FIELDS

log = logging.getLogger(__name__)

# A type: a datasets Value dtype ("string"), [type] for a list of it, {name: type} for a struct.
CRITERION = {"criterion": "string", "weight": "float64", "category": "string", "extra": "string"}
MESSAGE = {"role": "string", "content": "string"}
# (name, type, what it holds), in column order
COLUMNS: tuple[tuple[str, Any, str], ...] = (
    ("id", "string", "the example's id, `<method>/<document id>`"),
    ("document_id", "string", "the id of the source document in the corpus"),
    ("domain", "string", "the domain (cs, legal, principia, or a folder domain's name)"),
    ("method", "string", "agentic (Agentic Self-Instruct) or cot (the CoT Self-Instruct baseline)"),
    ("prompt", [MESSAGE], "the solver prompt the trained model sees, as chat messages: TRL's conversational "
                          "`prompt` (stage=train builds the same one)"),
    ("question", "string", "the task's question"),
    ("context", "string", "text the solver sees before the question (empty when the question stands alone)"),
    ("reference_answer", "string", "the challenger's reference answer"),
    ("rubric", [CRITERION], "the weighted criteria the judge marks met or not (a negative weight penalises; empty "
                            "for equivalence-graded domains); each criterion's `extra` is a JSON object of the "
                            "domain's own keys (legal: number, capability, weight_class)"),
    ("question_type", "string", "the kind of question (cs: its type; legal: the practice area)"),
    ("tags", ["string"], "reasoning-skill tags"),
    ("extra", "string", "anything else the challenger wrote (e.g. its plan), as a JSON object"),
    ("weak_scores", ["float64"], "the weak solver's score of each run, in [0, 1]"),
    ("strong_scores", ["float64"], "the strong solver's score of each run, in [0, 1]"),
    ("weak_mean", "float64", "mean of weak_scores"),
    ("strong_mean", "float64", "mean of strong_scores"),
    ("gap", "float64", "strong_mean - weak_mean"),
    ("rounds_used", "int64", "challenger rounds the document took until this task was accepted"),
    ("variant", "string", "content hash of the harness (editable templates and knobs) that made the example"),
    ("loop_judge", dict.fromkeys(LOOP_JUDGE_FIELDS, "string"), "the legal loop judge's verdict on the task "
                                                                "(null for domains without one)"),
)
NAMES = tuple(name for name, _, _ in COLUMNS)
# Fields whose value an older export stored as a JSON string
JSON_FIELDS = ("rubric", "tags", "extra", "loop_judge")


def _feature(spec: Any):
    import datasets

    if isinstance(spec, str):
        return datasets.Value(spec)
    if isinstance(spec, list):
        return datasets.List(_feature(spec[0]))
    return {name: _feature(inner) for name, inner in spec.items()}


def features():
    """The ``datasets.Features`` of every split."""
    import datasets

    return datasets.Features({name: _feature(spec) for name, spec, _ in COLUMNS})


def type_text(spec: Any) -> str:
    """A column type in words, for the card.

    >>> type_text([CRITERION])
    'list of {criterion: string, weight: float64, category: string, extra: string (JSON)}'
    """
    if isinstance(spec, str):
        return spec
    if isinstance(spec, list):
        return f"list of {type_text(spec[0])}"
    return "{" + ", ".join(f"{k}: {type_text(v)}" + (" (JSON)" if k == "extra" else "") for k, v in spec.items()) + "}"


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def _criterion_record(c: dict[str, Any]) -> dict[str, Any]:
    # Keys outside the struct (none from a generate run) join the criterion's extra, so nothing is lost
    extra = {**{k: v for k, v in c.items() if k not in CRITERION}, **(c.get("extra") or {})}
    return {"criterion": c.get("criterion", ""), "weight": float(c.get("weight", 0.0)),
            "category": c.get("category") or "", "extra": _json(extra)}


def to_record(row: dict[str, Any], prompt: list[dict[str, str]]) -> dict[str, Any]:
    """One record of the export from a row of accepted.jsonl and the solver prompt built from it.

    >>> r = to_record({"id": "agentic/d1", "question": "q?", "rubric": [{"criterion": "c", "weight": 2,
    ...                "category": "", "extra": {"number": 1}}], "extra": {"plan": "p"}},
    ...               [{"role": "user", "content": "q?"}])
    >>> r["rubric"], r["extra"], r["loop_judge"], r["tags"]
    ([{'criterion': 'c', 'weight': 2.0, 'category': '', 'extra': '{"number": 1}'}], '{"plan": "p"}', None, [])
    """
    unknown = sorted(set(row) - set(NAMES))
    if unknown:
        log.warning("row %s: fields %s are not columns of the dataset export (autodata/dataset_schema.py COLUMNS) "
                    "and are left out of dataset/; accepted.jsonl keeps them", row.get("id"), ", ".join(unknown))
    record: dict[str, Any] = {name: row.get(name) for name in NAMES}
    record["prompt"] = [{"role": m["role"], "content": m["content"]} for m in prompt]
    for name in ("context", "question_type"):
        record[name] = record[name] or ""
    record["rubric"] = [_criterion_record(c) for c in row.get("rubric") or []]
    record["tags"] = [str(t) for t in row.get("tags") or []]
    record["extra"] = _json(row.get("extra"))
    verdict = row.get("loop_judge")
    record["loop_judge"] = None if verdict is None else {
        k: (None if verdict.get(k) is None else str(verdict[k])) for k in LOOP_JUDGE_FIELDS}
    return record


def _decoded(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def from_record(record: dict[str, Any]) -> dict[str, Any]:
    """The row a record was made from (without its ``prompt``): JSON strings decoded, an empty ``loop_judge``
    left out. A row that is already one (a line of accepted.jsonl) comes back equal.

    >>> row = from_record({"id": "a", "prompt": [], "rubric": [{"criterion": "c", "weight": 2.0, "category": "",
    ...                    "extra": '{"number": 1}'}], "extra": '{"plan": "p"}', "loop_judge": None})
    >>> row["rubric"], row["extra"], "prompt" in row, "loop_judge" in row
    ([{'criterion': 'c', 'weight': 2.0, 'category': '', 'extra': {'number': 1}}], {'plan': 'p'}, False, False)
    >>> from_record({"id": "old", "rubric": '[{"criterion": "c", "weight": 1}]', "tags": '["x"]'})["rubric"]
    [{'criterion': 'c', 'weight': 1}]
    """
    row = {k: v for k, v in record.items() if k != "prompt"}
    for name in JSON_FIELDS:
        if name in row:
            row[name] = _decoded(row[name])
    if isinstance(row.get("rubric"), list):
        row["rubric"] = [{**c, "extra": _decoded(c["extra"])} if isinstance(c, dict) and "extra" in c else c
                         for c in row["rubric"]]
    if "loop_judge" in row and row["loop_judge"] is None:
        del row["loop_judge"]
    return row


def load_saved(path: Path):
    """``datasets.load_from_disk``, reading an older generate export too: it saved an empty split without a data
    file, which load_from_disk fails on (IndexError); such a split is read as empty."""
    import datasets

    listing = Path(path) / "dataset_dict.json"
    if not listing.exists():
        return datasets.load_from_disk(str(path))
    names = json.loads(listing.read_text()).get("splits", [])
    return datasets.DatasetDict({
        name: datasets.load_from_disk(str(listing.parent / name)) if any((listing.parent / name).glob("*.arrow"))
        else datasets.Dataset.from_dict({"id": []}) for name in names})
