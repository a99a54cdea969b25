"""The folder format of ``domain=folder``: reading ``domain.yaml`` into a typed ``DomainSpec``, checking the
folder's templates on their syntax trees, and applying the folder's values to the domain config.

Every problem is collected and raised as one ``FolderDomainError`` (a ValueError: run.py exits 2), one line per
problem naming the file, the key and the fix, e.g.::

    autodata/domains/folders/mine/domain.yaml: fields[2] (question).type: 'string' is not a field type; use text,
    list (a list of text) or enum (one of values)

The keys are described one by one in autodata/domains/folders/principia/domain.yaml; the domain built from a
spec is ``autodata.domains.folder.FolderDomain``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml
from jinja2 import TemplateSyntaxError, meta, nodes

from autodata.acceptance import POLICIES
from autodata.config import AcceptanceConfig, DomainConfig
from autodata.domains import checks
from autodata.domains.templating import PACKAGED_TEMPLATES, parse

SPEC_FILE = "domain.yaml"
FIELD_TYPES = ("text", "list", "enum")
GRADINGS = ("rubric", "equivalence")
ROLES = ("solver", "judge", "qv")
# Task slots a field may fill; any other field is kept in the row's ``extra`` column
COLUMNS = ("question", "context", "reference_answer", "question_type", "tags")
NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
# The role whose view of the task each template gets (None: no task, the challenger writes it; "all": every field)
TEMPLATE_ROLES = {"challenger": None, "challenger_cot": None, "_rules": None, "qv": "qv", "solver": "solver",
                  "judge": "judge", "feedback": "all"}
REQUIRED_TEMPLATES = ("challenger", "challenger_cot", "qv", "feedback", "solver", "judge")
# The variables the domain passes each template (checked with jinja2.meta before any render)
_TASK_VARS = {"task", "fields", "spec"}
VARIABLES = {
    "challenger": {"document", "feedback_groups", "cfg", "gen", "spec"},
    "qv": _TASK_VARS | {"document", "cfg"},
    "solver": _TASK_VARS | {"document"},
    "judge": _TASK_VARS | {"answer", "criteria", "show_reference"},
    "feedback": _TASK_VARS | {"reason", "group", "weak_scores", "strong_scores", "detail", "acceptance"},
}
VARIABLES["challenger_cot"] = VARIABLES["_rules"] = VARIABLES["challenger"]
TASK_ATTRS = ("question", "context", "reference_answer", "rubric", "question_type", "tags", "extra",
              "earlier_messages")

# domain.yaml section -> {its key: the DomainConfig key it sets}
CONFIG_KEYS = {
    "rubric": {"min": "rubric_min", "max": "rubric_max", "min_positive": "min_positive",
               "min_negative": "min_negative", "max_weight": "max_weight", "positive_only": "positive_only",
               "judge_sees_reference": "judge_sees_reference"},
    "quality": {"banned_phrasings": "banned_phrasings", "recall_openers": "recall_openers",
                "leakage_ngram": "leakage_ngram"},
}
TOP_KEYS = ("name", "description", "grading", "challengers_per_round", "fields", "rubric", "acceptance", "quality",
            "eval")
FIELD_KEYS = ("name", "type", "description", "required", "visible_to", "column", "values", "min_items", "max_items",
              "max_chars", "checks")
EVAL_KEYS = ("id", "prompt", "reference", "rubric")


class FolderDomainError(ValueError):
    """A domain folder that cannot be used; one line per problem, each naming the file, the key and the fix."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"domain.path={path} cannot be used ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    # text | list (of text) | enum
    type: str
    description: str = ""
    # False: may be missing or empty (a plan the writer thinks in)
    required: bool = True
    # Roles that see the field besides the challenger: solver, judge, qv (the feedback writer sees every field)
    visible_to: tuple[str, ...] = ("qv",)
    # The Task slot it fills; None keeps it in ``extra``
    column: Optional[str] = None
    values: tuple[str, ...] = ()
    min_items: int = 0
    max_items: Optional[int] = None
    # Longest value (a list: each item), a structural rule the writer is told about
    max_chars: Optional[int] = None
    # Named structural checks (FIELD_CHECKS)
    checks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How a problem names the field, as the packaged domains do.

        >>> FieldSpec("reference_answer", "text").label
        'reference answer'
        """
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class EvalSpec:
    """Which columns of an outside held-out row fill which fields (rows of a generate run need none of it)."""

    id: str = "id"
    # field name -> column of the row; these make the solver prompt
    prompt: dict[str, str] = field(default_factory=dict)
    reference: Optional[str] = None
    rubric: Optional[str] = None


@dataclass(frozen=True)
class DomainSpec:
    path: Path
    name: str
    grading: str
    fields: tuple[FieldSpec, ...]
    description: str = ""
    challengers_per_round: int = 1
    categories: tuple[str, ...] = ()
    # DomainConfig keys (rubric limits, quality rules) and AcceptanceConfig keys the folder sets
    config: dict[str, Any] = field(default_factory=dict)
    acceptance: dict[str, Any] = field(default_factory=dict)
    eval: EvalSpec = field(default_factory=EvalSpec)

    def as_template_value(self) -> dict[str, Any]:
        """``spec`` in every template: what a generic prompt needs to describe the task."""
        return {"name": self.name, "description": self.description, "grading": self.grading,
                "categories": list(self.categories),
                "fields": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in f.__dict__.items()}
                           for f in self.fields]}


# ----------------------------------------------------------------- reading domain.yaml
class _Reader:
    """Typed reads of one YAML mapping; each problem names the file and the key path."""

    def __init__(self, file: Path):
        self.file = file
        self.problems: list[str] = []

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.file}: {key}: {text}")

    def mapping(self, value: Any, key: str, known: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(key or "(top level)", f"expected a mapping of keys to values, found "
                              f"{type(value).__name__}; write {key or 'the file'} as indented keys "
                              f"({', '.join(known)})")
            return {}
        for k in value:
            if k not in known:
                self.problem(f"{key}.{k}" if key else str(k), f"unknown key; the keys here are {', '.join(known)} "
                             "(check the spelling)")
        return value

    def typed(self, value: Any, key: str, kind: type, fix: str) -> Any:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            self.problem(key, f"expected {_KIND_WORDS[kind]}, found {value!r}; {fix}")
            return None
        return value

    def names(self, value: Any, key: str, fix: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                                                            for v in value):
            self.problem(key, f"expected a list of names like [a, b], found {value!r}; {fix}")
            return ()
        return tuple(v.strip() for v in value)


_KIND_WORDS = {str: "text", int: "an integer", float: "a number", bool: "true or false"}


def load_spec(path: str | Path) -> DomainSpec:
    """The folder's ``domain.yaml`` as a DomainSpec; FolderDomainError lists every problem."""
    path = Path(path)
    file = path / SPEC_FILE
    if not path.is_dir():
        raise FolderDomainError(path, [f"{path}: not a folder; domain.path names a folder holding {SPEC_FILE} and "
                                       "the templates (autodata new-domain NAME writes a starting folder)"])
    if not file.is_file():
        raise FolderDomainError(path, [f"{file}: missing; a domain folder holds {SPEC_FILE} (run "
                                       "autodata new-domain NAME for a starting folder)"])
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise FolderDomainError(path, [f"{file}: not valid YAML ({err}); fix the syntax there"]) from None
    r = _Reader(file)
    top = r.mapping(raw if raw is not None else {}, "", TOP_KEYS)
    name = top.get("name")
    if not isinstance(name, str) or not DOMAIN_NAME.match(name):
        r.problem("name", f"expected a name of letters, digits, _ and - (it goes into every row's domain column), "
                          f"found {name!r}; set name: my_domain")
    grading = top.get("grading")
    if grading not in GRADINGS:
        r.problem("grading", f"expected one of {', '.join(GRADINGS)}, found {grading!r}; set grading: rubric "
                             "(weighted criteria) or grading: equivalence (same as the reference answer)")
    description = r.typed(top.get("description", ""), "description", str, "write one line of text") or ""
    per_round = r.typed(top.get("challengers_per_round", 1), "challengers_per_round", int, "set it to 1 or more")
    if per_round is not None and per_round < 1:
        r.problem("challengers_per_round", f"expected 1 or more, found {per_round}; set it to 1 or more")
    specs = _read_fields(r, top.get("fields"))
    config, categories = _read_config(r, top, grading)
    acceptance = _read_acceptance(r, top.get("acceptance"))
    eval_spec = _read_eval(r, top.get("eval"), specs, grading)
    _check_columns(r, specs, grading)
    reference = next((f for f in specs if f.column == "reference_answer"), None)
    if config.get("judge_sees_reference") and reference is not None and "judge" not in reference.visible_to:
        r.problem("rubric.judge_sees_reference", f"is true, but field {reference.name!r} is not visible to the judge; "
                                                 "add judge to its visible_to, or set judge_sees_reference: false")
    if r.problems:
        raise FolderDomainError(path, r.problems)
    return DomainSpec(path=path, name=name, grading=grading, fields=specs, description=description,
                      challengers_per_round=per_round or 1, categories=categories, config=config,
                      acceptance=acceptance, eval=eval_spec)


def _read_fields(r: _Reader, value: Any) -> tuple[FieldSpec, ...]:
    if not isinstance(value, list) or not value:
        r.problem("fields", f"expected a list of fields (- name: question, type: text, ...), found {value!r}; "
                            "declare at least the question and the reference answer")
        return ()
    out: list[FieldSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        key = f"fields[{i}]"
        item = r.mapping(item, key, FIELD_KEYS)
        name = item.get("name")
        if not isinstance(name, str) or not NAME.match(name) or name == "rubric":
            r.problem(f"{key}.name", f"expected a lower-case name ([a-z][a-z0-9_]*, not 'rubric', which grading: "
                                     f"rubric adds itself), found {name!r}; rename the field")
            continue
        key = f"fields[{i}] ({name})"
        if name in seen:
            r.problem(f"{key}.name", "declared twice; give each field its own name")
        seen.add(name)
        kind = item.get("type")
        if kind not in FIELD_TYPES:
            r.problem(f"{key}.type", f"{kind!r} is not a field type; use text, list (a list of text) or enum "
                                     "(one of values)")
            continue
        visible = r.names(item.get("visible_to", ["qv"]), f"{key}.visible_to", f"list roles from {', '.join(ROLES)}")
        for role in visible:
            if role not in ROLES:
                r.problem(f"{key}.visible_to", f"{role!r} is not a role; use any of {', '.join(ROLES)} (the "
                                               "challenger writes every field; the feedback writer sees them all)")
        column = item.get("column", name if name in COLUMNS else None)
        if column is not None and column not in COLUMNS:
            r.problem(f"{key}.column", f"{column!r} is not a task slot; use one of {', '.join(COLUMNS)}, or leave "
                                       "column out to keep the field in the row's extra column")
        values = r.names(item.get("values"), f"{key}.values", "list the allowed values")
        if kind == "enum" and not values:
            r.problem(f"{key}.values", "an enum needs its allowed values; add values: [a, b, c]")
        if kind != "enum" and values:
            r.problem(f"{key}.values", f"only an enum has values (this field is type {kind}); remove values or set "
                                       "type: enum")
        numbers = {}
        for k in ("min_items", "max_items", "max_chars"):
            if item.get(k) is not None:
                numbers[k] = r.typed(item[k], f"{key}.{k}", int, "write a whole number")
                if numbers[k] is not None and numbers[k] < (0 if k == "min_items" else 1):
                    r.problem(f"{key}.{k}", f"expected a number >= {0 if k == 'min_items' else 1}, found {numbers[k]}")
        if kind != "list" and ({"min_items", "max_items"} & set(item)):
            r.problem(f"{key}.min_items", f"only a list has items (this field is type {kind}); remove "
                                          "min_items/max_items or set type: list")
        field_checks = r.names(item.get("checks"), f"{key}.checks", f"list checks from {', '.join(FIELD_CHECKS)}")
        for c in field_checks:
            if c not in FIELD_CHECKS:
                r.problem(f"{key}.checks", f"{c!r} is not a known check; use any of {', '.join(FIELD_CHECKS)}")
        required = r.typed(item.get("required", True), f"{key}.required", bool, "write true or false")
        description = r.typed(item.get("description", ""), f"{key}.description", str, "write one line of text")
        out.append(FieldSpec(
            name=name, type=kind, description=description or "", required=required is not False,
            visible_to=visible, column=column, values=values, min_items=numbers.get("min_items") or 0,
            max_items=numbers.get("max_items"), max_chars=numbers.get("max_chars"), checks=field_checks))
    return tuple(out)


def _check_columns(r: _Reader, specs: tuple[FieldSpec, ...], grading: Any) -> None:
    for slot in COLUMNS:
        filling = [f.name for f in specs if f.column == slot]
        if len(filling) > 1:
            r.problem("fields", f"fields {', '.join(filling)} all fill the task slot {slot}; give column: {slot} "
                                "to one of them")
    by_slot = {f.column: f for f in specs if f.column}
    for slot in ("question", "reference_answer"):
        if slot not in by_slot and specs:
            r.problem("fields", f"no field fills the task slot {slot}; add a field named {slot} (or one with "
                                f"column: {slot})")
    for slot, f in by_slot.items():
        want = "list" if slot == "tags" else None
        if (want == "list") != (f.type == "list"):
            r.problem(f"fields ({f.name}).type", f"the {slot} slot holds {'a list' if want else 'text'}, but "
                                                 f"{f.name} is type {f.type}; set type: "
                                                 f"{'list' if want else 'text or enum'}, or drop column: {slot}")
    question = by_slot.get("question")
    if question is not None and "solver" not in question.visible_to:
        r.problem(f"fields ({question.name}).visible_to", "the question must be visible to the solver, or it "
                                                          "answers nothing; add solver to visible_to")
    reference = by_slot.get("reference_answer")
    if reference is not None and "solver" in reference.visible_to:
        r.problem(f"fields ({reference.name}).visible_to", "the solver would see the reference answer; remove "
                                                           "solver from visible_to")
    if grading == "equivalence" and reference is not None and "judge" not in reference.visible_to:
        r.problem(f"fields ({reference.name}).visible_to", "an equivalence judge compares with the reference "
                                                           "answer; add judge to visible_to")


def _read_config(r: _Reader, top: dict[str, Any], grading: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    defaults = DomainConfig()
    config: dict[str, Any] = {}
    categories: tuple[str, ...] = ()
    if "rubric" in top and grading == "equivalence":
        r.problem("rubric", "an equivalence-graded domain has no rubric; remove the rubric section, or set "
                            "grading: rubric")
    for section, keys in CONFIG_KEYS.items():
        known = tuple(keys) + (("categories",) if section == "rubric" else ())
        given = r.mapping(top.get(section), section, known)
        for key, target in keys.items():
            if key not in given:
                continue
            default = getattr(defaults, target)
            if isinstance(default, list):
                value = r.names(given[key], f"{section}.{key}", "write a list of phrases, [] for none")
                config[target] = list(value)
            else:
                value = r.typed(given[key], f"{section}.{key}", type(default), f"the default is {default!r}")
                if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                    r.problem(f"{section}.{key}", f"expected a number >= 0, found {value}")
                elif value is not None:
                    config[target] = value
        if section == "rubric":
            categories = r.names(given.get("categories"), "rubric.categories", "list the allowed categories")
    if config.get("max_weight", 1) < 1:
        r.problem("rubric.max_weight", "expected 1 or more; weights are nonzero integers within -max..max")
    low, high = config.get("rubric_min", defaults.rubric_min), config.get("rubric_max", defaults.rubric_max)
    if low > high:
        r.problem("rubric.min", f"{low} is above rubric.max ({high}); lower min or raise max")
    return config, categories


def _read_acceptance(r: _Reader, value: Any) -> dict[str, Any]:
    defaults = AcceptanceConfig()
    known = tuple(f.name for f in fields(AcceptanceConfig))
    given = r.mapping(value, "acceptance", known)
    out: dict[str, Any] = {}
    policy = given.get("policy")
    if "policy" not in given:
        r.problem("acceptance.policy", f"missing; name the rule from the acceptance registry: "
                                       f"{', '.join(sorted(POLICIES))}")
    elif policy not in POLICIES:
        r.problem("acceptance.policy", f"{policy!r} is not in the acceptance registry (autodata.acceptance.POLICIES: "
                                       f"{', '.join(sorted(POLICIES))}); pick one of them")
    elif POLICIES[policy].needs_loop_judge:
        usable = ", ".join(n for n, c in sorted(POLICIES.items()) if not c.needs_loop_judge)
        r.problem("acceptance.policy", f"{policy!r} leaves the verdict to a loop judge, which a folder domain has "
                                       f"not; pick a threshold policy ({usable})")
    else:
        out["policy"] = policy
    for key, val in given.items():
        if key == "policy" or key not in known:
            continue
        default = getattr(defaults, key)
        typed = r.typed(val, f"acceptance.{key}", type(default), f"the default is {default!r}")
        if typed is not None:
            out[key] = typed
    return out


def _read_eval(r: _Reader, value: Any, specs: tuple[FieldSpec, ...], grading: Any) -> EvalSpec:
    given = r.mapping(value, "eval", EVAL_KEYS)
    if not given:
        return EvalSpec()
    by_name = {f.name: f for f in specs}
    prompt = r.mapping(given.get("prompt"), "eval.prompt", tuple(by_name))
    columns: dict[str, str] = {}
    for name, column in prompt.items():
        if name in by_name and "solver" not in by_name[name].visible_to:
            r.problem(f"eval.prompt.{name}", f"{name} is not visible to the solver, so it cannot make the prompt; "
                                             "add solver to its visible_to, or remove it here")
        if not isinstance(column, str) or not column:
            r.problem(f"eval.prompt.{name}", f"expected the name of a column of the held-out rows, found {column!r}")
        else:
            columns[name] = column
    out = {}
    for key in ("id", "reference", "rubric"):
        if given.get(key) is not None:
            out[key] = r.typed(given[key], f"eval.{key}", str, "write the name of a column of the held-out rows")
    if out.get("rubric") and grading != "rubric":
        r.problem("eval.rubric", "only a rubric-graded domain reads a rubric; remove it or set grading: rubric")
    if grading == "equivalence" and not out.get("reference"):
        r.problem("eval.reference", "an equivalence-graded set needs the column of the reference answer; set "
                                    "eval.reference: answer")
    if grading == "rubric" and not out.get("rubric"):
        r.problem("eval.rubric", "a rubric-graded set needs the column of its criteria; set eval.rubric: criteria")
    return EvalSpec(id=out.get("id") or "id", prompt=columns, reference=out.get("reference"),
                    rubric=out.get("rubric"))


# ----------------------------------------------------------------- named structural checks of one field
FIELD_CHECKS = {"one_sentence": checks.one_sentence, "not_bare_integer": checks.not_bare_integer,
                "exact_number": checks.exact_number}


# ----------------------------------------------------------------- templates
def template_problems(spec: DomainSpec, sources: Sources) -> list[str]:
    """Each effective template (variant, template_dir, the folder, then the shared common/ ones) checked on its
    syntax tree: it compiles, and uses only the variables the domain passes it and the fields its role sees."""
    known = set(TEMPLATE_ROLES) | {"_attempts", "macros"}
    problems = [f"{file}: not a template of a domain folder (it holds {', '.join(n + '.j2' for n in TEMPLATE_ROLES)}"
                "; _attempts.j2 and macros.j2 may replace the shared ones); rename it or remove it"
                for file in sorted(spec.path.glob("*.j2")) if file.stem not in known]
    declared = {f.name: f for f in spec.fields}
    slots = {f.column: f for f in spec.fields if f.column}
    for name, role in TEMPLATE_ROLES.items():
        source = sources.source(name)
        where = str(sources.file(name))
        if source is None:
            if name in REQUIRED_TEMPLATES:
                problems.append(f"{spec.path / (name + '.j2')}: missing; every domain folder holds "
                                f"{', '.join(n + '.j2' for n in REQUIRED_TEMPLATES)} (copy it from "
                                "autodata/domains/folders/starter, or run autodata new-domain NAME)")
            continue
        try:
            tree = parse(source)
        except TemplateSyntaxError as err:
            problems.append(f"{where}: line {err.lineno}: does not compile ({err.message}); fix the Jinja syntax "
                            "there")
            continue
        bound = {n.target for n in tree.find_all(nodes.Import)}
        bound |= {(n if isinstance(n, str) else n[1]) for i in tree.find_all(nodes.FromImport) for n in i.names}
        allowed = VARIABLES[name] | bound | {"range"}
        for var in sorted(meta.find_undeclared_variables(tree) - allowed):
            hint = (f"declare it under fields: in {spec.path / SPEC_FILE} and write {{{{ fields.{var} }}}}"
                    if role else "the challenger writes the task: it sees no field values")
            problems.append(f"{where}: uses the variable {var!r}, which the domain does not pass to {name}.j2 "
                            f"(it passes {', '.join(sorted(VARIABLES[name]))}); {hint}, or remove it")
        for owner, attr, line in _attribute_uses(tree):
            if owner == "fields":
                f = declared.get(attr)
                if f is None:
                    problems.append(f"{where}: line {line}: uses fields.{attr}, but {spec.path / SPEC_FILE} declares "
                                    f"no field {attr!r} under fields (declared: {', '.join(declared)}); add it there "
                                    "or fix the name")
                elif role not in (None, "all") and role not in f.visible_to:
                    problems.append(_visibility(spec, where, line, f"fields.{attr}", f, role))
            elif owner == "task" and role is not None:
                if attr not in TASK_ATTRS:
                    problems.append(f"{where}: line {line}: uses task.{attr}, which a task does not have (it has "
                                    f"{', '.join(TASK_ATTRS)}); write fields.{attr} for a declared field")
                elif attr in slots and role != "all" and role not in slots[attr].visible_to:
                    problems.append(_visibility(spec, where, line, f"task.{attr}", slots[attr], role))
    return problems


class Sources:
    """Template texts as a search path resolves them (first folder that has the file wins), as PromptSet does."""

    def __init__(self, folders: list[Path]):
        self.folders = folders

    def file(self, name: str) -> Optional[Path]:
        return next((d / f"{name}.j2" for d in self.folders if (d / f"{name}.j2").is_file()), None)

    def source(self, name: str) -> Optional[str]:
        file = self.file(name)
        return file.read_text(encoding="utf-8") if file else None


def _visibility(spec: DomainSpec, where: str, line: int, use: str, f: FieldSpec, role: str) -> str:
    return (f"{where}: line {line}: uses {use}, but {spec.path / SPEC_FILE} does not show field {f.name!r} to the "
            f"{role} (fields ({f.name}).visible_to is {list(f.visible_to)}); add {role} to its visible_to, or remove "
            "it from the template")


def _attribute_uses(tree: nodes.Template) -> list[tuple[str, str, int]]:
    """(variable, attribute, line) of each ``fields.x`` / ``task.x`` / ``fields["x"]`` in the template."""
    out = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node.node, nodes.Name) and node.node.name in ("fields", "task"):
            if isinstance(node, nodes.Getattr):
                out.append((node.node.name, node.attr, node.lineno))
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                out.append((node.node.name, node.arg.value, node.lineno))
    return out


# ----------------------------------------------------------------- the domain config
def configure(cfg: DomainConfig) -> DomainConfig:
    """``cfg`` with the folder's rubric limits, quality rules and acceptance applied (a copy). A value of the
    domain group that differs from its DomainConfig default (the command line, an experiment file, a variant's
    knobs) wins over domain.yaml; applying it twice changes nothing. run.py calls this once, before validation
    (``autodata.domains.resolve_config``), so every stage reads the folder's acceptance rule from ``cfg.domain``."""
    return configured(cfg)[0]


def configured(cfg: DomainConfig, keep: tuple[str, ...] = ()) -> tuple[DomainConfig, DomainSpec]:
    """``configure(cfg)`` and the folder's spec, after checking the templates the domain will load; the keys in
    ``keep`` stay as ``cfg`` has them."""
    if not cfg.path:
        raise FolderDomainError(Path("(none)"), ["domain.path: missing; domain=folder needs domain.path=PATH, a "
                                                 f"folder holding {SPEC_FILE} and the templates"])
    spec = load_spec(cfg.path)
    problems = template_problems(spec, Sources(search_path(cfg, spec)))
    if problems:
        raise FolderDomainError(spec.path, problems)
    out = copy.deepcopy(cfg)
    defaults, acc_defaults = DomainConfig(), AcceptanceConfig()
    for key, value in spec.config.items():
        if key not in keep and getattr(out, key) == getattr(defaults, key):
            setattr(out, key, copy.deepcopy(value))
    for key, value in spec.acceptance.items():
        if getattr(out.acceptance, key) == getattr(acc_defaults, key):
            setattr(out.acceptance, key, value)
    return out, spec


def search_path(cfg: DomainConfig, spec: DomainSpec) -> list[Path]:
    """Where the domain's templates come from, first match wins: a variant's templates/, domain.template_dir, the
    folder, the shared templates/common/ (the folder takes the place of a packaged domain's templates)."""
    out = [Path(cfg.variant) / "templates"] if cfg.variant else []
    out += [Path(cfg.template_dir)] if cfg.template_dir else []
    return [*out, spec.path, PACKAGED_TEMPLATES / "common"]
