"""Harness variants: what the meta-optimizer may change, how a variant is stored, and how generate uses one.

A variant is the generate loop with some of its *editable* prompt templates rewritten and some *task-shaping
knobs* (``KNOBS``) set. Everything else is protected: the solver and judge prompts, scoring, the acceptance
thresholds, which model plays which role and how it samples. A variant folder (what ``stage=meta_optimize``
exports as ``best/``) holds::

    variant.json      format, domain, content hash, parent, lineage, scores
    knobs.yaml        every knob's value
    templates/*.j2    the editable templates it rewrites (the packaged ones otherwise)

and is used with one override::

    python -m autodata.run stage=generate domain.variant=runs/meta/best

The content hash (``content_hash``) covers the effective text of every editable template and every knob value,
so a generate run without a variant has one too (the baseline's), and two runs with the same hash made their
data with the same harness.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import yaml

from autodata.config import DomainConfig

FORMAT = 1
"""Version of the variant folder and of population.jsonl rows; a file of another version is refused."""

KNOBS: dict[str, type] = {
    "rubric_min": int,
    "rubric_max": int,
    "min_positive": int,
    "min_negative": int,
    "positive_only": bool,
    "max_weight": int,
    "banned_phrasings": list,
}
"""The task-shaping ``domain.*`` values a variant may set (the paper's meta-optimizer found positive-only rubrics
with weights capped at 7). Any other key is protected."""


class VariantError(ValueError):
    """A variant folder or edit that cannot be used; the message says what was expected and what to do."""


def knob_values(domain: DomainConfig) -> dict[str, Any]:
    """Every knob's value in ``domain`` (lists copied)."""
    return {k: list(getattr(domain, k)) if KNOBS[k] is list else getattr(domain, k) for k in KNOBS}


def normalize(text: str) -> str:
    """Template text with exactly one final newline (Jinja drops it anyway), so diffs and hashes are stable.

    >>> normalize("a\\n\\n")
    'a\\n'
    """
    return text.rstrip("\n") + "\n"


def content_hash(templates: dict[str, str], knobs: dict[str, Any]) -> str:
    """12 hex digits over the effective editable templates and knob values.

    >>> content_hash({"qv": "x"}, {"max_weight": 7}) == content_hash({"qv": "x\\n"}, {"max_weight": 7})
    True
    """
    blob = json.dumps({"templates": {k: normalize(v) for k, v in sorted(templates.items())},
                       "knobs": dict(sorted(knobs.items()))}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def check_knobs(knobs: Any) -> tuple[dict[str, Any], list[str]]:
    """Coerce knob values to their types; (values, problems). A key outside ``KNOBS`` is a problem (protected).

    >>> check_knobs({"max_weight": "7", "positive_only": "true"})
    ({'max_weight': 7, 'positive_only': True}, [])
    >>> check_knobs({"strong_min": 0.1})[1]
    ["'strong_min' is not an editable knob (editable: rubric_min, rubric_max, min_positive, min_negative, positive_only, max_weight, banned_phrasings); acceptance thresholds, scoring, solver and judge settings are protected"]
    """
    if not isinstance(knobs, dict):
        return {}, [f"knobs must be a mapping of knob name to value, found {type(knobs).__name__}"]
    out: dict[str, Any] = {}
    problems = []
    for name, value in knobs.items():
        kind = KNOBS.get(name)
        if kind is None:
            problems.append(f"{name!r} is not an editable knob (editable: {', '.join(KNOBS)}); acceptance "
                            "thresholds, scoring, solver and judge settings are protected")
            continue
        try:
            out[name] = _coerce(value, kind)
        except (TypeError, ValueError) as err:
            problems.append(f"knob {name!r}: {err}")
    return out, problems


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"expected true or false, found {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, found {value!r}")
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value.strip())
        else:
            raise ValueError(f"expected an integer, found {value!r}")
        if number < 0:
            raise ValueError(f"expected an integer >= 0, found {number}")
        return number
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"expected a list of phrases, found {value!r} ({err.msg})") from None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"expected a list of non-empty phrases, found {value!r}")
    return [v.strip() for v in value]


def apply_knobs(domain: DomainConfig, knobs: dict[str, Any]) -> DomainConfig:
    """A deep copy of ``domain`` with ``knobs`` set: the copy shares no list with the config it came from."""
    return replace(copy.deepcopy(domain), **{k: copy.deepcopy(v) for k, v in knobs.items()})


def template_name_problem(name: Any, editable: tuple[str, ...], protected: tuple[str, ...] = ()) -> Optional[str]:
    """Why ``name`` (from an edit, a variant folder's file or population.jsonl) is not an editable template's
    name; None when it is one, exactly. Compared case-folded too, so "Judge" or "judge.J2" is named for the
    protected template it would replace on a case-insensitive file system.

    >>> template_name_problem("qv", ("qv",)) is None
    True
    >>> template_name_problem("../Judge", ("qv",), ("judge",))
    "template '../Judge' is not an editable template (editable: qv)"
    >>> template_name_problem("Judge", ("qv",), ("judge",))
    "template 'Judge' is protected (it names judge.j2; editable: qv)"
    """
    if isinstance(name, str) and name in editable:
        return None
    hit = protected_match(str(name), protected)
    if hit is not None:
        return f"template {name!r} is protected (it names {hit}.j2; editable: {', '.join(editable)})"
    return f"template {name!r} is not an editable template (editable: {', '.join(editable)})"


def protected_match(name: str, protected: tuple[str, ...]) -> Optional[str]:
    """The protected template ``name`` (a stem or a file name) names when case is ignored, else None.

    >>> protected_match("Judge.J2", ("solver", "judge"))
    'judge'
    """
    folded = name.casefold()
    stem = folded[:-3] if folded.endswith(".j2") else folded
    return next((p for p in protected if p.casefold() == stem), None)


def protected_overrides(template_dir: Optional[str], editable: tuple[str, ...], protected: tuple[str, ...]) -> list[str]:
    """Files of ``template_dir`` that replace a protected template (sorted names). Names are compared case-folded:
    on a case-insensitive file system "Judge.J2" is judge.j2."""
    if not template_dir or not Path(template_dir).is_dir():
        return []
    folded = {p.casefold() for p in protected} - {e.casefold() for e in editable}
    return sorted(p.name for p in Path(template_dir).iterdir()
                  if p.suffix.casefold() == ".j2" and p.stem.casefold() in folded)


def write_folder(path: Path, domain: str, templates: dict[str, str], knobs: dict[str, Any],
                 info: dict[str, Any]) -> None:
    """Write a variant folder atomically (a temporary folder renamed into place): a reader never sees half of one.
    ``info`` goes into variant.json (its ``id`` is informative: a run recomputes it, ``Domain.variant_id``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / "templates").mkdir()
        for name, text in sorted(templates.items()):
            if not name or Path(name).name != name or name.startswith("."):
                raise VariantError(f"template name {name!r} is not a plain file name; a variant folder holds "
                                   "templates/<name>.j2 only")
            (tmp / "templates" / f"{name}.j2").write_text(normalize(text), encoding="utf-8")
        (tmp / "knobs.yaml").write_text(yaml.safe_dump(knobs, sort_keys=False, allow_unicode=True), encoding="utf-8")
        meta = {"format": FORMAT, "domain": domain, **info}
        (tmp / "variant.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def template_files(folder: Path, editable: tuple[str, ...],
                   protected: tuple[str, ...] = ()) -> tuple[dict[str, str], list[str]]:
    """(name -> text, problems) of a variant's templates/ folder: regular files named ``<editable>.j2`` exactly, no
    symbolic link, nothing else (a name is compared case-folded with ``protected`` to say what it would replace).
    A missing folder holds nothing."""
    if folder.is_symlink():
        return {}, ["templates/ is a symbolic link; a variant's templates are regular files in a real folder"]
    templates: dict[str, str] = {}
    problems = []
    for file in sorted(folder.iterdir()) if folder.is_dir() else []:
        if file.is_symlink() or not file.is_file():
            kind = "a symbolic link" if file.is_symlink() else "not a regular file"
            problems.append(f"templates/{file.name} is {kind}; a variant's templates are regular files")
            continue
        if file.suffix != ".j2" or template_name_problem(file.stem, editable) is not None:
            hit = protected_match(file.name, protected)
            also = f" (it names the protected {hit}.j2 where case is ignored)" if hit else ""
            problems.append(f"templates/{file.name} is not an editable template{also} (editable: "
                            f"{', '.join(n + '.j2' for n in editable)}); the solver and judge prompts are protected "
                            "and a variant may not replace them")
            continue
        templates[file.stem] = file.read_text(encoding="utf-8")
    return templates, problems


def read_folder(path: str | Path, domain: str, editable: tuple[str, ...],
                protected: tuple[str, ...] = ()) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """(templates, knobs, info) of a variant folder, after checking its layout; VariantError names every problem."""
    path = Path(path)
    hint = ("a variant folder is what stage=meta_optimize exports (its run dir's best/, or variants/<id>/): "
            "variant.json, knobs.yaml and templates/")
    if not path.is_dir():
        raise VariantError(f"domain.variant={path}: no such folder; {hint}")
    problems = []
    # What a run loads is regular files in a real folder, never a link to something else
    for name in ("variant.json", "knobs.yaml", "templates"):
        entry = path / name
        if entry.is_symlink():
            problems.append(f"{name} is a symbolic link; a variant folder holds regular files (and a templates/ "
                            "folder) only")
        elif entry.exists() and entry.is_dir() != (name == "templates"):
            problems.append(f"{name} is {'a folder' if entry.is_dir() else 'not a folder'}; expected "
                            f"{'a folder of .j2 files' if name == 'templates' else 'a regular file'}")
    info: dict[str, Any] = {}
    try:
        info = json.loads((path / "variant.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append("variant.json is missing")
    except json.JSONDecodeError as err:
        problems.append(f"variant.json is not JSON ({err.msg} at line {err.lineno})")
    if info:
        if info.get("format") != FORMAT:
            problems.append(f"variant.json has format {info.get('format')!r}, this version reads {FORMAT}; "
                            "export the variant again with this version's stage=meta_optimize")
        if info.get("domain") != domain:
            problems.append(f"the variant was made for domain {info.get('domain')!r}, this run is domain={domain}; "
                            f"pass domain={info.get('domain')} or a variant of domain {domain}")
    knobs: dict[str, Any] = {}
    try:
        raw = yaml.safe_load((path / "knobs.yaml").read_text(encoding="utf-8")) or {}
        knobs, knob_problems = check_knobs(raw)
        problems += [f"knobs.yaml: {p}" for p in knob_problems]
    except FileNotFoundError:
        problems.append("knobs.yaml is missing")
    except yaml.YAMLError as err:
        problems.append(f"knobs.yaml is not YAML ({err})")
    templates, found = template_files(path / "templates", editable, protected)
    problems += found
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise VariantError(f"domain.variant={path} cannot be used:\n{lines}\n({hint})")
    return templates, knobs, info


def resolve(domain: DomainConfig, domain_cls: Any) -> DomainConfig:
    """``domain`` with its variant folder's knobs applied (run.py calls this once, before validation); unchanged
    without ``domain.variant``. The templates are layered by the domain itself (``Domain.__init__``)."""
    if not domain.variant:
        return domain
    _, knobs, _ = read_folder(domain.variant, domain.name, domain_cls.editable_templates,
                              domain_cls.protected_templates)
    return apply_knobs(domain, knobs)
