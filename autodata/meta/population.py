"""The population of harness variants and how one is scored.

``population.jsonl`` holds one row per kept variant: its edits as unified diffs against the run's baseline
templates, its knob values, its validation score, parent and lineage. Rows carry ``format``, ``domain`` and the
baseline's content hash, so a file from another version, domain or starting harness is refused, not misread.

A variant is scored by running the generate loop (``autodata.generate.score_documents``) on a list of
documents in its own folder, with the run's endpoints and response cache: the same variant on the same
documents makes the same calls (per-call seeds derive from the document, round and step), so a second scoring
is served from the cache. The sabotage monitor reads the same run: the weak solver's answer length, refusals
and truncation, and the strong solver's mean score.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from autodata.config import MetaConfig, RootConfig
from autodata.corpus import Document
from autodata.meta.edits import apply_diff, make_diff
from autodata.rundir import read_jsonl
from autodata.scoring import mean_or_none
from autodata.variants import FORMAT, apply_knobs, content_hash, normalize, template_name_problem, write_folder


class PopulationError(ValueError):
    """population.jsonl (or the run dir's split) belongs to another run; nothing was changed."""


@dataclass
class Variant:
    id: str
    # Every editable template's effective text and every knob's value
    templates: dict[str, str]
    knobs: dict[str, Any]
    parent: Optional[str] = None
    # Ancestor ids, the baseline first
    lineage: list[str] = field(default_factory=list)
    iteration: int = 0
    score: Optional[float] = None
    # Validation stats and sabotage-monitor values of its scoring run
    validation: dict[str, Any] = field(default_factory=dict)
    # Every validation score it got: the first scoring, then each fresh re-evaluation as a parent
    # (meta.parent_reeval=fresh); ``score`` is their mean
    evaluations: list[float] = field(default_factory=list)

    def add_evaluation(self, score: float) -> float:
        """Record one more validation score; the stored score becomes the mean of all of them.

        >>> v = Variant("v", {}, {}, score=0.8, evaluations=[0.8])
        >>> v.add_evaluation(0.6)
        0.7
        """
        if not self.evaluations and self.score is not None:
            self.evaluations = [self.score]
        self.evaluations.append(float(score))
        self.score = round(sum(self.evaluations) / len(self.evaluations), 12)
        return self.score

    def row(self, domain: str, baseline: "Variant") -> dict[str, Any]:
        diffs = {name: d for name, text in sorted(self.templates.items())
                 if (d := make_diff(baseline.templates.get(name, ""), text, name))}
        return {"format": FORMAT, "domain": domain, "baseline": baseline.id, "id": self.id, "parent": self.parent,
                "lineage": self.lineage, "iteration": self.iteration, "diffs": diffs, "knobs": self.knobs,
                "score": self.score, "evaluations": self.evaluations or ([self.score] if self.score is not None
                                                                         else []),
                "validation": self.validation}


def make_variant(templates: dict[str, str], knobs: dict[str, Any], **fields: Any) -> Variant:
    templates = {k: normalize(v) for k, v in templates.items()}
    return Variant(id=content_hash(templates, knobs), templates=templates, knobs=dict(knobs), **fields)


def load_population(path: Path, domain: str, baseline: Variant, editable: tuple[str, ...],
                    protected: tuple[str, ...] = ()) -> list[Variant]:
    """The kept variants in file order; PopulationError when a row is of another format, domain or baseline, or
    names a template that is not one of ``editable`` (exactly: "../judge", "Judge" and "judge.J2" are refused)."""
    out: list[Variant] = []
    for n, row in enumerate(read_jsonl(path), 1):
        where = f"{path} line {n}"
        if row.get("format") != FORMAT:
            raise PopulationError(f"{where} has format {row.get('format')!r}; this version writes {FORMAT}. "
                                  "Start a new run dir (hydra.run.dir=...) or use the version that wrote it")
        if row.get("domain") != domain:
            raise PopulationError(f"{where} belongs to domain {row.get('domain')!r}, this run is domain={domain}. "
                                  f"Pass domain={row.get('domain')} to resume it, or start a new run dir")
        if row.get("baseline") != baseline.id:
            raise PopulationError(
                f"{where} was evolved from baseline {row.get('baseline')}, but this run's harness is {baseline.id} "
                "(another version of the packaged templates, another domain.variant or template_dir, or other knob "
                "values). Resume with the settings that started it, or start a new run dir")
        diffs = row.get("diffs") or {}
        named = [p for name in (diffs if isinstance(diffs, dict) else ["<diffs is not an object>"])
                 if (p := template_name_problem(name, editable, protected))]
        if named:
            raise PopulationError(f"{where}: {'; '.join(named)}; the file was edited or damaged")
        try:
            templates = {name: apply_diff(baseline.templates.get(name, ""), diff)
                         for name, diff in (row.get("diffs") or {}).items()}
        except ValueError as err:
            raise PopulationError(f"{where}: its diff no longer applies to the baseline ({err})") from None
        variant = make_variant({**baseline.templates, **templates}, row.get("knobs") or {},
                               parent=row.get("parent"), lineage=list(row.get("lineage") or []),
                               iteration=int(row.get("iteration") or 0), score=row.get("score"),
                               validation=row.get("validation") or {},
                               evaluations=[float(x) for x in row.get("evaluations") or []])
        if variant.id != row.get("id"):
            raise PopulationError(f"{where}: the rebuilt variant's hash {variant.id} differs from the stored "
                                  f"{row.get('id')}; the file was edited or damaged")
        out.append(variant)
    return out


def split_documents(docs: list[Document], meta: MetaConfig) -> tuple[list[Document], list[Document]]:
    """(training, validation) documents: disjoint, the same for the same corpus and seed. Validation is drawn
    first, so a smaller ``meta.train_documents`` never changes it. ValueError says how many are missing."""
    import hashlib

    need = meta.validation_documents + meta.minibatch_size
    if len(docs) < need:
        raise ValueError(
            f"the corpus has {len(docs)} usable documents, but meta.validation_documents "
            f"({meta.validation_documents}) + meta.minibatch_size ({meta.minibatch_size}) need {need}; raise "
            "corpus.limit (or use a larger corpus) or lower those settings")
    ranked = sorted(docs, key=lambda d: hashlib.sha1(f"{meta.seed}:meta:{d.id}".encode()).hexdigest())
    validation = ranked[:meta.validation_documents]
    train = ranked[meta.validation_documents:meta.validation_documents + meta.train_documents]
    return train, validation


def variant_config(cfg: RootConfig, folder: Path, knobs: dict[str, Any]) -> RootConfig:
    """The run's config with the variant laid over it, quiet (no W&B run, no bar, no push, no target). The cache is
    the meta run's (through the shared LLM), so the scoring run opens none of its own."""
    vcfg = copy.deepcopy(cfg)
    vcfg.cache.enabled = False
    vcfg.domain = apply_knobs(replace(vcfg.domain, variant=str(folder)), knobs)
    vcfg.logger = "none"
    vcfg.progress = False
    vcfg.generate.push_to_hub = None
    vcfg.generate.target_accepted = None
    return vcfg


def materialize(variant: Variant, plain: dict[str, str], folder: Path, domain: str, info: dict[str, Any]) -> None:
    """Write ``variant`` as a variant folder: the templates that differ from ``plain`` (what the domain loads
    without a variant) and every knob value."""
    if (folder / "variant.json").exists():
        return
    overlay = {n: t for n, t in variant.templates.items() if normalize(t) != normalize(plain.get(n, ""))}
    write_folder(folder, domain, overlay, variant.knobs,
                 {"id": variant.id, "parent": variant.parent, "lineage": variant.lineage,
                  "iteration": variant.iteration, "score": variant.score, **info})


REFUSAL = re.compile(r"\b(i can(?:no|')t (?:help|answer|assist|do)|i am unable|i'm unable|i won't|i will not|"
                     r"as an ai\b|i'm sorry, but|i apologi[sz]e)", re.IGNORECASE)


# What each meta.score measures, in words: summary.json and best/variant.json carry it beside the number
SCORES = {
    "pass_rate": "documents that yielded an accepted task / validation documents (with 25 documents only multiples "
                 "of 0.04)",
    "pass_rate_rounds": "accepted tasks / rounds on the validation documents: each round is one task the challenger "
                        "wrote, passed when the quality verifier and the solver gap accept it",
    "mean_gap": "mean strong-minus-weak gap of the accepted tasks (0 when none is accepted)",
}


def score_of(stats: dict[str, Any], metric: str) -> float:
    """The variant's score from its run's stats.json (``SCORES`` says what each measures).

    >>> score_of({"accepted": 3, "documents": 4, "rounds": 10, "gap_mean_accepted": 0.4}, "pass_rate")
    0.75
    >>> score_of({"accepted": 3, "documents": 4, "rounds": 10, "gap_mean_accepted": 0.4}, "pass_rate_rounds")
    0.3
    >>> score_of({"accepted": 0, "documents": 4, "gap_mean_accepted": None}, "mean_gap")
    0.0
    """
    if metric == "mean_gap":
        return float(stats.get("gap_mean_accepted") or 0.0)
    if metric == "pass_rate_rounds":
        return stats["accepted"] / stats["rounds"] if stats.get("rounds") else 0.0
    return stats["accepted"] / stats["documents"] if stats.get("documents") else 0.0


def monitor_values(rounds: list[dict[str, Any]]) -> dict[str, Optional[float]]:
    """What the sabotage monitor compares: weak answers' mean length, refusal and truncation shares, and the
    strong solver's mean score, over every solver run of a scoring run.

    >>> monitor_values([{"weak": [{"answer": "I can't help with that", "finish_reason": "stop"},
    ...                           {"answer": "x" * 10, "finish_reason": "length"}],
    ...                  "strong": [{"answer": "ok", "score": 0.5}]}])["weak_refusal_share"]
    0.5
    """
    weak = [r for row in rounds for r in row.get("weak") or []]
    strong = [r["score"] for row in rounds for r in row.get("strong") or [] if r.get("score") is not None]
    n = len(weak)
    return {
        "weak_runs": n,
        "weak_answer_chars": mean_or_none([float(len(r.get("answer") or "")) for r in weak]),
        "weak_refusal_share": sum(1 for r in weak if REFUSAL.search((r.get("answer") or "")[:300])) / n if n else None,
        "weak_truncation_share": sum(1 for r in weak if r.get("finish_reason") == "length") / n if n else None,
        "strong_mean": mean_or_none(strong),
    }


def sabotage_flags(parent: dict[str, Any], child: dict[str, Any], meta: MetaConfig) -> list[str]:
    """Signs that a child widened the gap by breaking the solvers rather than by harder tasks.

    >>> m = MetaConfig()
    >>> sabotage_flags({"strong_mean": 0.8, "weak_answer_chars": 900.0}, {"strong_mean": 0.6,
    ...                 "weak_answer_chars": 200.0}, m)
    ['strong score dropped 0.80 -> 0.60', "weak answers shrank to 22% of the parent's length"]
    """
    flags = []
    ps, cs = parent.get("strong_mean"), child.get("strong_mean")
    if ps is not None and cs is not None and ps - cs > meta.max_strong_drop:
        flags.append(f"strong score dropped {ps:.2f} -> {cs:.2f}")
    pl, cl = parent.get("weak_answer_chars"), child.get("weak_answer_chars")
    if pl and cl is not None and cl < meta.min_weak_length_ratio * pl:
        flags.append(f"weak answers shrank to {cl / pl:.0%} of the parent's length")
    for key, what in (("weak_refusal_share", "refusals"), ("weak_truncation_share", "truncations")):
        p, c = parent.get(key), child.get(key)
        if p is not None and c is not None and c - p > meta.max_weak_share_rise:
            flags.append(f"weak {what} rose {p:.0%} -> {c:.0%}")
    return flags
