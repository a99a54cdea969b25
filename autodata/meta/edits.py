"""Edits to a harness variant, and the guards every edit passes before any model call.

An edit is text: new versions (or unified diffs) of one or more editable templates, and knob values; the
paper's "code diff relative to a baseline repository". It is applied whole or not at all: every template it
touches passes the same guards, and one refused part refuses the edit. Nothing a model
writes is ever executed as Python: templates render in the guarded sandbox (``autodata.domains.sandbox``:
Jinja's immutable sandbox on deep copies, with limits on operations, CPU time and size enforced while it
renders). The guards reject an edit that

- names a protected template (solver, judge, loop judge, macros) or a knob outside ``variants.KNOBS``;
- leaves the domain config invalid (e.g. rubric_min above rubric_max);
- fails to compile, or to render within the sandbox's limits, with probe values or with real documents
  (``sample_documents``, a short and a long one, and the run's shortest and longest training documents);
- by its syntax tree (``autodata.meta.syntax``): no longer shows a data variable its parent shows (the document,
  the task, the earlier attempts and their diagnoses, the rule that decided an outcome), shows it only under a
  new condition or loop, uses the data in any expression its parent does not (a new test on the document, an
  unfenced or truncated display), or uses a statement, filter, operator, name or call its parent's templates
  do not use;
- by its renders: shows a probe value or a real document less often than the parent, or outside its data fence.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from autodata.acceptance import FailureReason
from autodata.config import DomainConfig, RootConfig
from autodata.domains import DOMAINS, Criterion, Domain, FailedAttempt, Task
from autodata.domains.templating import DATA_TAGS, neutralize
from autodata.generate import check_generate
from autodata.meta.syntax import Reading, compare, read_template
from autodata.variants import apply_knobs, check_knobs, normalize, template_name_problem

# An edited template longer than this is refused (a prompt, not a document)
MAX_TEMPLATE_CHARS = 20_000
# A rendered probe prompt longer than this is refused (a loop that multiplies text)
MAX_RENDERED_CHARS = 200_000


class EditRejected(ValueError):
    """An edit the guards refuse; ``kind`` is "invalid_edit" (not a usable edit) or "guard" (touches what is
    protected, or breaks a prompt)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class Change:
    """One template's part of an edit."""

    template: str
    # "replace": text is the template's new text; "diff": text is a unified diff against the parent's text
    mode: str = "replace"
    text: str = ""

    def row(self) -> dict[str, Any]:
        return {"template": self.template, "mode": self.mode, "text": self.text}


@dataclass
class Edit:
    # The first template changed ("" for an edit of knobs only); with ``mode`` and ``text``, the single-template
    # form older history rows and callers use. Further templates are in ``more``.
    template: str = ""
    mode: str = "replace"
    text: str = ""
    # Knob values to set (names from variants.KNOBS), as the implementer wrote them
    knobs: dict[str, Any] = field(default_factory=dict)
    rationale: str = ""
    # The other templates the same edit changes
    more: list[Change] = field(default_factory=list)

    @property
    def changes(self) -> list[Change]:
        """Every template change of the edit, in order."""
        first = [Change(self.template, self.mode, self.text)] if self.template else []
        return first + list(self.more)

    def row(self) -> dict[str, Any]:
        out = {"template": self.template, "mode": self.mode, "text": self.text, "knobs": self.knobs,
               "rationale": self.rationale}
        if self.more:
            out["templates"] = [c.row() for c in self.changes]
        return out

    @classmethod
    def of(cls, changes: list[Change], knobs: Optional[dict[str, Any]] = None, rationale: str = "") -> "Edit":
        """An edit of several templates (the first is ``template``/``mode``/``text``, the rest ``more``)."""
        first = changes[0] if changes else Change("", "none", "")
        return cls(first.template, first.mode, first.text, dict(knobs or {}), rationale, list(changes[1:]))


def edited_templates(edit: dict[str, Any]) -> list[str]:
    """The templates an ``Edit.row()`` names, in either form (one template, or several under ``templates``).

    >>> edited_templates({"template": "qv", "templates": [{"template": "qv"}, {"template": "feedback"}]})
    ['qv', 'feedback']
    >>> edited_templates({"template": "challenger", "mode": "diff"})
    ['challenger']
    """
    several = [c.get("template") for c in edit.get("templates") or [] if isinstance(c, dict) and c.get("template")]
    return several or ([edit["template"]] if edit.get("template") else [])


# ---------------------------------------------------------------------------------------------- diffs
def make_diff(old: str, new: str, name: str) -> str:
    """A unified diff of one template (empty when equal).

    >>> print(make_diff("a\\nb\\n", "a\\nc\\n", "qv"), end="")
    --- a/qv.j2
    +++ b/qv.j2
    @@ -1,2 +1,2 @@
     a
    -b
    +c
    """
    return "".join(difflib.unified_diff(normalize(old).splitlines(keepends=True),
                                        normalize(new).splitlines(keepends=True), f"a/{name}.j2", f"b/{name}.j2"))


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def apply_diff(old: str, diff: str) -> str:
    """Apply a unified diff to ``old``. Each hunk's context and removed lines must match ``old`` exactly; a hunk
    whose line numbers are off is found by its text (after the previous hunk). ValueError says which hunk failed.

    >>> apply_diff("a\\nb\\n", make_diff("a\\nb\\n", "a\\nc\\n", "qv"))
    'a\\nc\\n'
    """
    lines = normalize(old).splitlines(keepends=True)
    hunks: list[tuple[int, list[str], list[str]]] = []
    current: Optional[tuple[int, list[str], list[str]]] = None
    for raw in diff.splitlines(keepends=True):
        if raw.startswith(("--- ", "+++ ")) and current is None:
            continue
        match = _HUNK.match(raw)
        if match:
            current = (int(match.group(1)), [], [])
            hunks.append(current)
            continue
        if current is None:
            if raw.strip():
                raise ValueError(f"the diff has text before its first @@ hunk header: {raw.strip()[:60]!r}")
            continue
        body = raw if raw.endswith("\n") else raw + "\n"
        if raw.startswith("\\"):
            continue
        tag, text = body[:1], body[1:]
        if tag == " " or body == "\n":
            current[1].append(text if tag == " " else "\n")
            current[2].append(text if tag == " " else "\n")
        elif tag == "-":
            current[1].append(text)
        elif tag == "+":
            current[2].append(text)
        else:
            raise ValueError(f"diff line does not start with ' ', '-' or '+': {raw.strip()[:60]!r}")
    if not hunks:
        raise ValueError("the diff has no @@ hunk")
    out: list[str] = []
    position = 0
    for number, (start, before, after) in enumerate(hunks, 1):
        at = _find(lines, before, max(start - 1, 0), position)
        if at is None:
            shown = "".join(before)[:120]
            raise ValueError(f"hunk {number} does not match the template: its context and removed lines "
                             f"{shown!r} are not in the text")
        out += lines[position:at] + after
        position = at + len(before)
    return "".join(out + lines[position:])


def _find(lines: list[str], block: list[str], hint: int, start: int) -> Optional[int]:
    if not block:
        return max(hint, start)
    candidates = [hint] + [i for i in range(start, len(lines) - len(block) + 1) if i != hint]
    for i in candidates:
        if i >= start and lines[i:i + len(block)] == block:
            return i
    return None


# ---------------------------------------------------------------------------------------------- implementer output
def parse_edit(obj: Any, editable: tuple[str, ...]) -> Edit:
    """The implementer's JSON answer as an ``Edit``; ValueError lists what is wrong. Reads both forms: several
    templates under ``templates`` (items ``{"template", "mode", "text"}``), or one as ``template``/``mode``/``text``.

    >>> e = parse_edit({"templates": [{"template": "qv", "mode": "replace", "text": "a"},
    ...                               {"template": "feedback", "mode": "diff", "text": "b"}]}, ("qv", "feedback"))
    >>> [(c.template, c.mode) for c in e.changes]
    [('qv', 'replace'), ('feedback', 'diff')]
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
    problems: list[str] = []
    items = obj.get("templates")
    if items in (None, []):
        items = [obj] if obj.get("template") not in (None, "", "none") else []
    elif not isinstance(items, list):
        problems.append(f"templates: expected a list, found {type(items).__name__}")
        items = []
    changes: list[Change] = []
    for item in items:
        if not isinstance(item, dict):
            problems.append(f"templates: expected items like {{\"template\": ..., \"mode\": ..., \"text\": ...}}, "
                            f"found {item!r}"[:200])
            continue
        change = _parse_change(item, problems)
        if change is not None:
            changes.append(change)
    names = [c.template for c in changes]
    if len(set(names)) < len(names):
        problems.append(f"templates: each template at most once, found {', '.join(names)}")
    knobs: dict[str, Any] = {}
    raw_knobs = obj.get("knobs") or []
    if isinstance(raw_knobs, dict):
        knobs = dict(raw_knobs)
    elif isinstance(raw_knobs, list):
        for item in raw_knobs:
            if not isinstance(item, dict) or "name" not in item or "value" not in item:
                problems.append(f"knobs: expected items like {{\"name\": ..., \"value\": ...}}, found {item!r}"[:200])
                continue
            knobs[str(item["name"])] = item["value"]
    else:
        problems.append(f"knobs: expected a list, found {type(raw_knobs).__name__}")
    if not changes and not knobs:
        problems.append("the edit changes nothing: no template and no knob")
    if problems:
        raise ValueError("; ".join(problems))
    return Edit.of(changes, knobs, str(obj.get("rationale") or ""))


def _parse_change(item: dict[str, Any], problems: list[str]) -> Optional[Change]:
    """One template's change, or None (nothing to change, or a problem appended)."""
    template = item.get("template")
    template = "" if template in (None, "", "none") else template
    if not isinstance(template, str):
        problems.append(f"template: expected a template name, found {template!r}")
        return None
    mode = item.get("mode") or ("none" if not template else "replace")
    if mode not in ("replace", "diff", "none"):
        problems.append(f"mode: expected replace, diff or none, found {mode!r}")
    text = item.get("text") or ""
    if not isinstance(text, str):
        problems.append(f"text: expected a string, found {type(text).__name__}")
        text = ""
    if not template or mode == "none":
        return None
    if not text.strip():
        problems.append(f"text: empty, but template {template!r} is to be changed")
        return None
    return Change(template, mode, text)


# ---------------------------------------------------------------------------------------------- guards
PROBES = {
    "document": "PROBE-DOCUMENT-7c1e",
    "the task's question": "PROBE-QUESTION-2b9d",
    "the task's context": "PROBE-CONTEXT-5a04",
    "the reference answer": "PROBE-REFERENCE-8e6f",
    "the rubric": "PROBE-CRITERION-31aa",
    "the earlier attempts": "PROBE-EARLIER-d402",
    "the diagnoses of earlier attempts": "PROBE-DIAGNOSIS-90bc",
    "the rule that decided the outcome": "PROBE-DETAIL-6f17",
}


def probe_prompts(domain: Domain, doc: str = PROBES["document"],
                  size: int = 1) -> dict[str, Callable[[], list[dict[str, str]]]]:
    """Each editable entry template of ``domain``, rendered with probe values and document ``doc`` (``_rules``
    renders inside the challengers); ``size`` rubric criteria and earlier attempts, so loops run that often."""
    p = PROBES
    task = Task(question=p["the task's question"], context=p["the task's context"],
                reference_answer=p["the reference answer"],
                rubric=[Criterion(f"{p['the rubric']} {i}", 5 - 2 * i, "reasoning",
                                  {"number": i + 1, "capability": "reasoning", "weight_class": "important"})
                        for i in range(size)],
                question_type="prediction", tags=["reasoning"])
    reasons = (FailureReason.TOO_EASY, FailureReason.FAILED_QV, FailureReason.FAILED_ON_STRONG)
    history = [FailedAttempt(i + 1, reasons[i % 3], p["the earlier attempts"], p["the diagnoses of earlier attempts"],
                             0.9, 0.95) for i in range(size)]
    prompts: dict[str, Callable[[], list[dict[str, str]]]] = {
        "challenger": lambda: domain.challenger_messages(doc, history, "agentic"),
        "challenger_cot": lambda: domain.challenger_messages(doc, [], "cot"),
        "qv": lambda: domain.qv_messages(task, doc),
        "feedback": lambda: domain.feedback_messages(task, FailureReason.TOO_EASY, [0.9] * size, [0.95] * size,
                                                     p["the rule that decided the outcome"]),
    }
    if domain.has_extractor:
        prompts["extractor"] = lambda: domain.extractor_messages(doc)
    return prompts


@functools.lru_cache(maxsize=1)
def sample_documents() -> tuple[str, ...]:
    """Two real documents every edit is rendered with: the Python reference topics (the embedded corpus) nearest
    500 and 20,000 characters long."""
    from pydoc_data import topics

    texts = sorted(t.strip() for t in topics.topics.values())
    return tuple(min(texts, key=lambda t: abs(len(t) - n)) for n in (500, 20_000))


_SPAN = re.compile(r"<(%s)>(.*?)</\1>" % "|".join(DATA_TAGS), re.DOTALL)


def probe_places(text: str, markers: Optional[dict[str, str]] = None) -> dict[str, tuple[int, bool]]:
    """Probe name -> (occurrences, every occurrence inside a data fence) in one rendered prompt; ``markers``
    (default ``PROBES``) are the texts looked for.

    >>> probe_places("<document>\\nPROBE-DOCUMENT-7c1e\\n</document>")["document"]
    (1, True)
    """
    spans = [(m.start(2), m.end(2)) for m in _SPAN.finditer(text)]
    out = {}
    for name, marker in (markers or PROBES).items():
        found = [m.start() for m in re.finditer(re.escape(marker), text)]
        out[name] = (len(found), all(any(s <= i < e for s, e in spans) for i in found))
    return out


def _is_setting(value: Any) -> bool:
    """A variable that is the run's own configuration (``cfg``, ``acceptance``), not data."""
    return dataclasses.is_dataclass(value) and type(value).__module__ == DomainConfig.__module__


@dataclass
class Trial:
    """One harness's editable templates, compiled and rendered the way the guards need them."""

    # Sample ("probes", or a real document's label) -> entry template -> its prompt as one text
    rendered: dict[str, dict[str, str]]
    # Sample -> the texts looked for in its prompts (PROBES, the document replaced by the real one)
    markers: dict[str, dict[str, str]]
    # Entry template -> (file name, its data variables, all its variables)
    entries: dict[str, tuple[str, set[str], set[str]]]
    # Every template file the domain's search path resolves, by file name
    sources: dict[str, str]

    def reading(self, entry: str) -> Reading:
        file, data, variables = self.entries[entry]
        return read_template(file, self.sources.get, data, variables)


def render_all(domain_cfg: DomainConfig, templates: dict[str, str], documents: tuple[str, ...] = ()) -> Trial:
    """Compile ``templates`` (name -> text) laid over the domain's own, and render every entry template with the
    probe values, then with each of ``documents``. Each render runs within the sandbox's limits
    (``autodata.domains.sandbox``) on deep copies. ValueError names the template that fails."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "templates"
        folder.mkdir()
        for name, text in templates.items():
            (folder / f"{name}.j2").write_text(normalize(text), encoding="utf-8")
        try:
            # A deep copy: nothing of the run's own config reaches a template under trial
            domain = DOMAINS[domain_cfg.name](replace(copy.deepcopy(domain_cfg), variant=tmp))
        except Exception as err:  # noqa: BLE001 - any template error (syntax, missing block) is the edit's fault
            raise ValueError(f"the templates do not compile: {err}") from None
        prompts = domain.prompts
        entries: dict[str, tuple[str, set[str], set[str]]] = {}
        render_messages = prompts.messages

        def recording(name: str, **variables: Any) -> list[dict[str, str]]:
            entries[current] = (f"{name}.j2", {k for k, v in variables.items() if not _is_setting(v)}, set(variables))
            return render_messages(name, **variables)

        prompts.messages = recording  # type: ignore[method-assign]
        samples = [("probes", PROBES["document"], 1)]
        samples += [(f"real document {i} ({len(d)} characters)", d, 3)
                    for i, d in enumerate(dict.fromkeys(documents), 1)]
        rendered: dict[str, dict[str, str]] = {}
        markers: dict[str, dict[str, str]] = {}
        for label, doc, size in samples:
            rendered[label] = {}
            markers[label] = {**PROBES, "document": neutralize(doc)}
            for current, render in probe_prompts(domain, doc, size).items():
                try:
                    messages = render()
                except Exception as err:  # noqa: BLE001 - sandbox refusals and limits, undefined variables, filters
                    where = "" if label == "probes" else f" with {label}"
                    raise ValueError(f"{current}.j2 fails to render{where}: {type(err).__name__}: "
                                     f"{err}"[:500]) from None
                text = "\n".join(m["content"] for m in messages)
                if label == "probes" and len(text) > MAX_RENDERED_CHARS:
                    raise ValueError(f"{current}.j2 renders {len(text)} characters (more than {MAX_RENDERED_CHARS})")
                rendered[label][current] = text
        sources = {name: prompts.source(name[:-3]) or "" for name in prompts.env.list_templates(extensions=["j2"])}
        return Trial(rendered, markers, entries, sources)


def apply_edit(cfg: RootConfig, parent_templates: dict[str, str], parent_knobs: dict[str, Any],
               edit: Edit, editable: tuple[str, ...], protected: tuple[str, ...],
               documents: tuple[str, ...] = ()) -> tuple[dict[str, str], dict[str, Any]]:
    """The child's (templates, knobs) after ``edit``, both complete (every editable template's effective text,
    every knob's value). Raises EditRejected before any model call when a guard refuses it. ``documents`` (the
    run's training documents) are rendered besides ``sample_documents()``."""
    templates = dict(parent_templates)
    for change in edit.changes:
        problem = template_name_problem(change.template, editable, protected)
        if problem:
            raise EditRejected("guard", f"{problem}; solver, judge and scoring prompts may not be edited")
    for change in edit.changes:
        if change.mode == "diff":
            try:
                templates[change.template] = apply_diff(parent_templates.get(change.template, ""), change.text)
            except ValueError as err:
                raise EditRejected("invalid_edit", f"the diff for {change.template}.j2 does not apply: {err}") from None
        else:
            templates[change.template] = change.text
        text = templates[change.template]
        if len(text) > MAX_TEMPLATE_CHARS:
            raise EditRejected("guard", f"{change.template}.j2 would be {len(text)} characters (at most "
                                        f"{MAX_TEMPLATE_CHARS})")
    knobs, problems = check_knobs(edit.knobs)
    if problems:
        raise EditRejected("guard", "; ".join(problems))
    child_knobs = {**parent_knobs, **knobs}
    problems = config_problems(cfg, child_knobs)
    if problems:
        raise EditRejected("guard", "the knobs leave the domain config invalid: " + "; ".join(problems))
    if normalize_all(templates) == normalize_all(parent_templates) and child_knobs == parent_knobs:
        raise EditRejected("invalid_edit", "the edit changes nothing (the child equals its parent)")
    samples = (*sample_documents(), *documents)
    try:
        before = render_all(apply_knobs(cfg.domain, parent_knobs), parent_templates, samples)
    except ValueError as err:
        raise EditRejected("invalid_edit", f"the parent itself does not render ({err})") from None
    try:
        after = render_all(apply_knobs(cfg.domain, child_knobs), templates, samples)
    except ValueError as err:
        raise EditRejected("guard", str(err)) from None
    try:
        problems = [p for entry in after.entries
                    for p in compare(f"{entry}.j2", before.reading(entry), after.reading(entry))]
    except Exception as err:  # noqa: BLE001 - a tree the reader cannot follow is refused, never waved through
        problems = [f"the templates' syntax trees could not be read ({type(err).__name__}: {err})"]
    if problems:
        raise EditRejected("guard", _listed(problems))
    for label, prompts in after.rendered.items():
        where = "" if label == "probes" else f" with {label}"
        markers = after.markers[label]
        for name, text in prompts.items():
            was, now = probe_places(before.rendered[label][name], markers), probe_places(text, markers)
            for probe, (count, fenced) in was.items():
                if count and not now[probe][0]:
                    raise EditRejected("guard", f"{name}.j2 no longer shows {probe}{where} (a variable the prompt "
                                                "needs)")
                if count and fenced and not now[probe][1]:
                    raise EditRejected("guard", f"{name}.j2 shows {probe} outside its data fence (<tag> ... </tag>)"
                                                f"{where}: text from outside must stay fenced")
    return templates, child_knobs


def _listed(problems: list[str], limit: int = 1500) -> str:
    """Problems joined for history.jsonl, at most ``limit`` characters."""
    text = "; ".join(problems)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def normalize_all(templates: dict[str, str]) -> dict[str, str]:
    return {k: normalize(v) for k, v in templates.items()}


def config_problems(cfg: RootConfig, knobs: dict[str, Any]) -> list[str]:
    """The generate rules on ``domain.*`` broken by these knob values (the rest of the config is the run's)."""
    trial = copy.deepcopy(cfg)
    trial.domain = apply_knobs(trial.domain, knobs)
    problems = [str(p) for p in check_generate(trial) if p.key.startswith("domain.")]
    for key in ("rubric_min", "max_weight"):
        if getattr(trial.domain, key) < 1:
            problems.append(f"domain.{key} ({getattr(trial.domain, key)}) must be >= 1")
    return problems
