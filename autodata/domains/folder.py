"""A domain from a folder: ``domain.yaml`` and Jinja templates, no Python.

    python -m autodata.run stage=generate domain=folder domain.path=autodata/domains/folders/principia \\
        corpus=principia_fixture

``domain.yaml`` declares the task's fields (text, list of text or enum; length limits; which of the solver, the
judge and the quality verifier see each), the grading kind (a weighted ``rubric`` with its limits, or
``equivalence`` with a reference answer, k-of-n like principia), the acceptance policy by name with its
thresholds, the framework's structural rules and how an outside held-out set's columns map to the fields. The
challenger's JSON schema, the task parser and its error messages, and the structural checks derive from the
fields. The folder's templates take the place of the packaged ``templates/<domain>/``: challenger,
challenger_cot, _rules, qv and feedback are editable (``stage=meta_optimize`` and ``domain.template_dir`` may
replace them), solver and judge protected, exactly as for the packaged domains.

Every problem of a folder (a key it does not know, a type it cannot parse, a policy the registry lacks, a
template that does not compile or uses a field the folder does not declare or show to that role) is collected
and raised as one ``FolderDomainError`` (a ValueError: run.py exits 2), one line per problem naming the file,
the key and the fix. The format is described key by key in autodata/domains/folders/principia/domain.yaml.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from autodata.acceptance import GROUP_TITLES
from autodata.config import DomainConfig
from autodata.domains import checks
from autodata.domains.base import (
    STRING,
    Fields,
    Grade,
    Task,
    TaskFormatError,
    object_schema,
)
from autodata.domains.folder_spec import (
    FIELD_CHECKS,
    ROLES,
    SPEC_FILE,
    DomainSpec,
    FolderDomainError,
    configure,
    configured,
    load_spec,
    search_path,
)
from autodata.domains.principia import PrincipiaDomain
from autodata.domains.rubric import RubricDomain
from autodata.domains.templating import PromptSet
from autodata.variants import KNOBS

__all__ = ["DomainSpec", "FolderDomain", "FolderDomainError", "configure", "configured", "load_spec"]


# ----------------------------------------------------------------- the domain
class FolderDomain(RubricDomain):
    """A domain read from ``domain.path``; rubric or equivalence grading as its domain.yaml says."""

    name = "folder"
    # An instance's grading is its folder's; the class's says nothing (domain_class() gives a class that knows)
    grading = ""
    spec: Optional[DomainSpec] = None

    # The config this domain runs with (autodata.domains.resolve_config calls it once, in run.py)
    resolve_config = staticmethod(configure)

    @classmethod
    def for_spec(cls, spec: DomainSpec) -> type["FolderDomain"]:
        """A subclass whose class attributes state this folder's facts (grading, name), for code that asks a
        domain class before building one (validation, the model card)."""
        return type(f"FolderDomain_{spec.name}", (cls,), {"spec": spec, "grading": spec.grading,
                                                          "challengers_per_round": spec.challengers_per_round})

    def __init__(self, cfg: DomainConfig):
        # A variant's knobs were applied after the folder's values (run.py: resolve_config, then variants.resolve):
        # they stand, even where a knob equals its DomainConfig default
        cfg, self.spec = configured(cfg, keep=tuple(KNOBS) if cfg.variant else ())
        self.name = self.spec.name
        self.grading = self.spec.grading
        self.challengers_per_round = self.spec.challengers_per_round
        self._visible = {role: {f.name for f in self.spec.fields if role in f.visible_to} for role in ROLES}
        self._visible["all"] = {f.name for f in self.spec.fields}
        super().__init__(cfg)

    def _prompts(self, cfg: DomainConfig, overlays: tuple[Path, ...]) -> PromptSet:
        # The folder takes the place of the packaged templates/<domain>/ in the search path (``search_path``);
        # ``configured`` already checked its templates
        return PromptSet("folder", list(self.template_names), str(self.spec.path),
                         overlays=search_path(self.cfg, self.spec)[:-2],
                         shared={"spec": self.spec.as_template_value()})

    # ----------------------------------------------------------------- task values
    def values(self, task: Task) -> dict[str, Any]:
        """Every declared field's value in ``task`` ("" or [] when absent)."""
        out = {}
        for f in self.spec.fields:
            value = getattr(task, f.column) if f.column else task.extra.get(f.name)
            out[f.name] = value if value is not None else ([] if f.type == "list" else "")
        return out

    def view(self, task: Task, role: str) -> tuple[Task, dict[str, Any]]:
        """What ``role`` sees: the task with the slots of hidden fields blanked, and the visible fields' values."""
        shown = self._visible[role]
        blank: dict[str, Any] = {}
        for f in self.spec.fields:
            if f.column and f.name not in shown:
                blank[f.column] = [] if f.type == "list" else ""
        extra = task.extra if role == "all" else {k: v for k, v in task.extra.items() if k in shown}
        values = {k: v for k, v in self.values(task).items() if k in shown}
        return replace(task, **blank, extra=extra), values

    # ----------------------------------------------------------------- challenger
    def _challenger_schema(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for f in self.spec.fields:
            if f.type == "enum":
                props[f.name] = {"type": "string", "enum": list(f.values)}
            elif f.type == "list":
                props[f.name] = {"type": "array", "items": STRING}
                if f.min_items:
                    props[f.name]["minItems"] = f.min_items
                if f.max_items is not None:
                    props[f.name]["maxItems"] = f.max_items
            else:
                props[f.name] = STRING
        if self.spec.grading == "rubric":
            category = {"type": "string", "enum": list(self.spec.categories)} if self.spec.categories else STRING
            criterion = object_schema({"criterion": STRING, "weight": self.weight_schema(), "category": category})
            props["rubric"] = self.rubric_array(criterion)
        return object_schema(props)

    def parse_task(self, obj: dict) -> Task:
        f = Fields(obj, f"challenger task ({self.spec.name})")
        slots: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for fs in self.spec.fields:
            if fs.type == "text":
                value: Any = f.text(fs.name, required=fs.required, allow_empty=not fs.required)
            elif not fs.required and f.obj.get(fs.name) in (None, "", []):
                # An optional list or enum left out or empty: nothing to parse
                value = [] if fs.type == "list" else ""
            elif fs.type == "list":
                value = []
                for i, item in enumerate(f.array(fs.name, min_items=fs.min_items, max_items=fs.max_items)):
                    if isinstance(item, str) and item.strip():
                        value.append(item.strip())
                    else:
                        f.problems.append(f"{fs.name}[{i}]: expected a non-empty string, found {item!r}")
            else:
                value = f.choice(fs.name, fs.values)
            if fs.column:
                slots[fs.column] = value
            elif value:
                extra[fs.name] = value
        rubric = []
        if self.spec.grading == "rubric":
            rubric = self.parse_rubric(f, "{criterion, weight, category}")
            if self.spec.categories:
                for i, c in enumerate(rubric):
                    if c.category not in self.spec.categories:
                        f.problems.append(f"rubric[{i}].category: expected one of {', '.join(self.spec.categories)}"
                                          f", found {c.category!r}")
        f.raise_if_any(TaskFormatError)
        return Task(question=slots.get("question", ""), context=slots.get("context", ""),
                    reference_answer=slots.get("reference_answer", ""), rubric=rubric,
                    question_type=slots.get("question_type", ""), tags=slots.get("tags", []), extra=extra)

    # ----------------------------------------------------------------- quality
    def domain_problems(self, task: Task, doc_text: str) -> list[str]:
        problems = []
        values = self.values(task)
        reference = task.reference_answer
        for f in self.spec.fields:
            items = values[f.name] if f.type == "list" else [values[f.name]]
            for item in map(str, items):
                if f.max_chars is not None and len(item) > f.max_chars:
                    problems.append(f"{f.label} is {len(item)} characters; keep it under {f.max_chars}")
                problems += [p for c in f.checks if (p := FIELD_CHECKS[c](item, f.label))]
            # The base rules read the question and the context; a further field the solver sees is checked here
            if "solver" in f.visible_to and f.column not in ("question", "context", "reference_answer"):
                text = " ".join(map(str, items))
                for phrase in checks.phrases_found(text, self.self_references):
                    problems.append(f"{f.label} mentions {phrase!r}, but the solver never sees the source; state what "
                                    "is needed directly")
                if checks.contains_answer(reference, text) or checks.leaked_ngram(reference, text,
                                                                                   self.cfg.leakage_ngram):
                    problems.append(f"{f.label} gives the reference answer away (answer leakage); rewrite it")
        if self.spec.grading == "rubric":
            problems += self.rubric_problems(task.rubric)
        return problems

    def qv_messages(self, task: Task, doc_text: str) -> list[dict]:
        shown, values = self.view(task, "qv")
        return self.prompts.messages("qv", task=shown, fields=values, document=doc_text, cfg=self.cfg)

    # ----------------------------------------------------------------- solving and grading
    def solver_messages(self, task: Task, doc_text: Optional[str]) -> list[dict]:
        shown, values = self.view(task, "solver")
        *system, question = self.prompts.messages("solver", task=shown, fields=values, document=doc_text)
        return [*system, *task.earlier_messages, question]

    def judge_messages(self, task: Task, answer: str) -> list[dict]:
        shown, values = self.view(task, "judge")
        extra: dict[str, Any] = {}
        if self.spec.grading == "rubric":
            extra = {"criteria": [{"id": i, "text": c.criterion, "penalty": c.weight < 0}
                                  for i, c in enumerate(task.rubric, start=1)],
                     "show_reference": self.cfg.judge_sees_reference}
        return self.prompts.messages("judge", task=shown, fields=values, answer=answer, **extra)

    def judge_schema(self, task: Task) -> dict[str, Any]:
        if self.spec.grading == "equivalence":
            return PrincipiaDomain.judge_schema(self, task)
        return super().judge_schema(task)

    def parse_grade(self, task: Task, obj: dict) -> Grade:
        if self.spec.grading == "equivalence":
            return PrincipiaDomain.parse_grade(self, task, obj)
        return super().parse_grade(task, obj)

    def feedback_messages(self, task: Task, reason: str, weak_scores: list[float], strong_scores: list[float],
                          detail: str) -> list[dict]:
        shown, values = self.view(task, "all")
        return self.prompts.messages(
            "feedback", task=shown, fields=values, reason=reason, group=GROUP_TITLES.get(reason, reason.upper()),
            weak_scores=[round(s, 3) for s in weak_scores], strong_scores=[round(s, 3) for s in strong_scores],
            detail=detail, acceptance=self.cfg.acceptance)

    # ----------------------------------------------------------------- held-out sets
    def reads_eval_row(self, row: dict[str, Any]) -> bool:
        """Is ``row`` an outside held-out row in the folder's ``eval`` format (every column it names present)?"""
        e = self.spec.eval
        wanted = [*e.prompt.values(), *(c for c in (e.reference, e.rubric) if c)]
        return bool(e.prompt) and all(c in row for c in wanted)

    def eval_row(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        """A generate-style row (id, question, context, reference_answer, rubric, ...) from an outside held-out
        row, by the folder's ``eval`` columns. KeyError names a missing column."""
        e = self.spec.eval
        by_name = {f.name: f for f in self.spec.fields}
        slots: dict[str, Any] = {"context": ""}
        extra: dict[str, Any] = {}
        for name, column in e.prompt.items():
            if column not in row:
                raise KeyError(f"column {column!r} (eval.prompt.{name} in {self.spec.path / SPEC_FILE}) is missing")
            column_of = by_name[name].column
            if column_of:
                slots[column_of] = row[column]
            else:
                extra[name] = row[column]
        if e.reference:
            if e.reference not in row:
                raise KeyError(f"column {e.reference!r} (eval.reference in {self.spec.path / SPEC_FILE}) is missing")
            slots["reference_answer"] = str(row[e.reference])
        out = {"id": str(row.get(e.id, f"row{index}")), **slots, "extra": extra}
        if e.rubric:
            if e.rubric not in row:
                raise KeyError(f"column {e.rubric!r} (eval.rubric in {self.spec.path / SPEC_FILE}) is missing")
            out["rubric"] = [{"criterion": str(c.get("criterion", "")), "weight": float(c.get("weight", 0)),
                              "category": str(c.get("category", "")), "extra": {}} for c in row[e.rubric]]
        return out
