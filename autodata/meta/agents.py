"""The meta-optimizer's two agents and what they read.

The analyzer reads the parent's trajectories on a minibatch of *training* documents and the history of earlier
iterations, and writes a root-cause analysis; the implementer turns it into an ``Edit``. Neither ever sees a
validation document: trajectories come from the minibatch only, and history rows carry scores, never texts of
validation runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from autodata.domains.base import STRING, object_schema
from autodata.domains.templating import PromptSet, shorten
from autodata.meta.edits import edited_templates
from autodata.variants import KNOBS

TEMPLATES = Path(__file__).parent / "templates"


class Agents:
    """Prompts, schemas and parsers of the analyzer and implementer for one domain's editable templates."""

    def __init__(self, domain_name: str, editable: tuple[str, ...]):
        self.domain_name = domain_name
        self.editable = editable
        self.targets = (*editable, "knobs")
        # The meta templates come first on the search path; the packaged common folder supplies nothing they use.
        self.prompts = PromptSet("common", ["analyzer", "implementer"], overlays=(TEMPLATES,))
        self.analyzer_schema = object_schema({
            "analysis": STRING, "target": {"type": "string", "enum": list(self.targets)}, "proposal": STRING})
        # One edit may change several templates at once (the paper's diff against the baseline repository)
        self.implementer_schema = object_schema({
            "rationale": STRING,
            "templates": {"type": "array", "items": object_schema({
                "template": {"type": "string", "enum": list(editable)},
                "mode": {"type": "string", "enum": ["replace", "diff"]},
                "text": STRING})},
            "knobs": {"type": "array", "items": object_schema({
                "name": {"type": "string", "enum": list(KNOBS)}, "value": STRING})},
        })

    def analyzer_messages(self, trajectories: str, history: str, knobs: dict[str, Any],
                          score_name: str, cut: str = "") -> list[dict[str, str]]:
        """``cut`` says which rounds did not fit the analyzer's context (empty when all did)."""
        return self.prompts.messages("analyzer", domain=self.domain_name, editable=self.editable, knobs=knobs,
                                     trajectories=trajectories or "(no rounds)",
                                     history=history or "(no earlier iterations)", targets=self.targets,
                                     score_name=score_name, cut=cut)

    def parse_analysis(self, obj: Any) -> dict[str, str]:
        """The analyzer's answer; ValueError when it says nothing (the iteration then ends as rejected)."""
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
        analysis = str(obj.get("analysis") or "").strip()
        if not analysis:
            raise ValueError("the analyzer returned no analysis")
        target = str(obj.get("target") or "").strip()
        return {"analysis": analysis, "target": target if target in self.targets else "",
                "proposal": str(obj.get("proposal") or "").strip()}

    def implementer_messages(self, analysis: dict[str, str], templates: dict[str, str], knobs: dict[str, Any],
                             history: str = "") -> list[dict[str, str]]:
        """The analysis, the history of earlier iterations and the text of every editable template of the parent
        (each fenced as data), so one edit may change several of them."""
        summary = analysis["analysis"] + (f"\n\nProposal: {analysis['proposal']}" if analysis.get("proposal") else "")
        current = {name: templates.get(name, "") for name in self.editable}
        return self.prompts.messages("implementer", analysis=summary, target=analysis.get("target") or "",
                                     templates=current, knobs=knobs, editable=self.editable,
                                     history=history or "(no earlier iterations)")


# Which rounds the analyzer loses first when the minibatch does not fit its context: rounds without solver answers
# (malformed tasks, endpoint errors) say least, then tasks the quality verifier refused, then accepted ones; the
# rounds where the solvers answered and the task still failed say most about what to change.
_RANK = {"too_easy": 0, "failed_on_strong": 0, "no_gap": 0, None: 1, "failed_qv": 2}


def _rank(row: dict[str, Any]) -> int:
    if row.get("status") == "accepted":
        return 1
    return _RANK.get(row.get("reason"), 3 if not (row.get("weak") or row.get("strong")) else 0)


def exchange_digest(rounds: list[dict[str, Any]], budget: int) -> tuple[str, str]:
    """The full solver exchanges of the minibatch within ``budget`` characters, and a note of what was cut.

    Every round as it happened: the question, context, reference answer and rubric, each weak and strong answer
    with the judge's verdict on each criterion, the quality verifier's verdict and feedback, the outcome and the
    orchestrator's diagnosis. When they do not all fit, the least informative rounds (``_RANK``) shrink to a
    summary first, then are left out; the note says which.

    >>> rows = [{"document_id": "d1", "round": 1, "status": "rejected", "reason": "too_easy",
    ...          "task": {"question": "Predict x.", "reference_answer": "4", "rubric": [{"criterion": "says 4",
    ...          "weight": 5}]}, "weak": [{"answer": "It is 4.", "met": [True], "score": 1.0}], "weak_mean": 1.0}]
    >>> text, cut = exchange_digest(rows, 10_000)
    >>> print(text)  # doctest: +NORMALIZE_WHITESPACE
    === document d1, round 1: rejected (too_easy)
    question: Predict x.
    reference answer: 4
    rubric:
      [1] (+5) says 4
    weak answer 1 (score 1.00):
      It is 4.
      verdicts: [1] met
    >>> cut
    ''
    >>> exchange_digest(rows, 150)[1].split(" (")[0]
    '1 of 1 rounds shortened to a summary'
    """
    full = [_exchange_block(row) for row in rounds]
    short = [_round_block(row) for row in rounds]
    order = sorted(range(len(rounds)), key=lambda i: (_rank(rounds[i]), i))
    form = {i: "full" for i in order}
    used = sum(len(b) + 1 for b in full)
    # The least informative round first: shrink it to its summary, and if that is not enough leave it out, before
    # touching a more informative one
    for i in reversed(order):
        if used <= budget:
            break
        used -= len(full[i]) - len(short[i])
        form[i] = "short"
        if used > budget:
            used -= len(short[i]) + 1
            form[i] = "none"
    text = "\n".join(full[i] if form[i] == "full" else short[i] for i in range(len(rounds)) if form[i] != "none")
    shortened = sum(1 for f in form.values() if f == "short")
    dropped = sum(1 for f in form.values() if f == "none")
    notes = []
    if shortened:
        notes.append(f"{shortened} of {len(rounds)} rounds shortened to a summary")
    if dropped:
        notes.append(f"{dropped} of {len(rounds)} rounds left out")
    cut = ""
    if notes:
        cut = ", ".join(notes) + (" (the least informative first: no solver answers, then QV refusals, then "
                                  "accepted)")
    return text, cut


def trajectory_digest(rounds: list[dict[str, Any]], budget: int) -> str:
    """What happened on the minibatch, one summary per round, within ``budget`` characters: status and reason,
    the question, solver means and judge verdict counts, the quality verifier's feedback and the diagnosis.

    >>> print(trajectory_digest([{"document_id": "d1", "round": 1, "status": "rejected", "reason": "too_easy",
    ...     "task": {"question": "Predict x."}, "weak_mean": 0.9, "strong_mean": None, "weak": [{"met": [True, False]}],
    ...     "diagnosis": "General knowledge."}], 1000))
    document d1, round 1: rejected (too_easy)
      question: Predict x.
      weak mean 0.90 (criteria met 1/2)
      diagnosis: General knowledge.
    """
    return _within([_round_block(row) for row in rounds], budget, "rounds")


def _exchange_block(row: dict[str, Any]) -> str:
    """One round in full (see ``exchange_digest``)."""
    head = f"=== document {row.get('document_id')}, round {row.get('round')}: {row.get('status')}"
    out = [head + (f" ({row['reason']})" if row.get("reason") else "")]
    task = row.get("task") or {}
    for key, label in (("question", "question"), ("context", "context"), ("reference_answer", "reference answer")):
        if task.get(key):
            out.append(f"{label}: {task[key]}")
    rubric = task.get("rubric") or []
    if rubric:
        out.append("rubric:")
        out += [f"  [{i}] ({float(c.get('weight') or 0):+g}) {c.get('criterion')}" for i, c in enumerate(rubric, 1)]
    qv = row.get("qv") or {}
    if qv:
        verdict = {True: "PASS", False: "FAIL"}.get(qv.get("passed"), "")
        out.append(f"quality verifier: {verdict} {qv.get('feedback') or ''}".rstrip())
    for side in ("weak", "strong"):
        for k, run in enumerate(row.get(side) or [], 1):
            score = run.get("score")
            out.append(f"{side} answer {k}" + (f" (score {score:.2f})" if score is not None else "") + ":")
            out.append("  " + str(run.get("answer") or "").replace("\n", "\n  "))
            met = run.get("met")
            if met:
                out.append("  verdicts: " + ", ".join(f"[{i}] {'met' if m else 'not met'}"
                                                     for i, m in enumerate(met, 1)))
            if run.get("judge_error"):
                out.append(f"  judge error: {run['judge_error']}")
    if row.get("detail") and row.get("status") != "accepted":
        out.append(f"outcome: {row['detail']}")
    if row.get("diagnosis"):
        out.append(f"diagnosis: {row['diagnosis']}")
    return "\n".join(out)


def _round_block(row: dict[str, Any]) -> str:
    head = f"document {row.get('document_id')}, round {row.get('round')}: {row.get('status')}"
    if row.get("reason"):
        head += f" ({row['reason']})"
    out = [head]
    task = row.get("task") or {}
    if task.get("question"):
        out.append(f"  question: {shorten(task['question'], 300)}")
    means = []
    for side in ("weak", "strong"):
        mean = row.get(f"{side}_mean")
        if mean is not None:
            met = [m for run in row.get(side) or [] for m in (run.get("met") or [])]
            count = f" (criteria met {sum(met)}/{len(met)})" if met else ""
            means.append(f"{side} mean {mean:.2f}{count}")
    if means:
        out.append("  " + "; ".join(means))
    qv = (row.get("qv") or {}).get("feedback")
    if qv:
        out.append(f"  quality verifier: {shorten(qv, 240)}")
    elif row.get("reason") in ("failed_qv", "malformed") and row.get("detail"):
        out.append(f"  detail: {shorten(row['detail'], 240)}")
    if row.get("diagnosis"):
        out.append(f"  diagnosis: {shorten(row['diagnosis'], 300)}")
    return "\n".join(out)


def history_digest(history: list[dict[str, Any]], budget: int) -> str:
    """Earlier iterations, most informative first (kept children, then flagged ones, then the rest), the most
    recent first within each group, cut to ``budget`` characters. Scores only: no validation text."""
    def rank(row: dict[str, Any]) -> tuple[int, int]:
        group = 0 if row.get("kept") else 1 if row.get("flags") else 2 if row.get("child_score") is not None else 3
        return group, -int(row.get("iteration") or 0)

    rows = sorted((r for r in history if r.get("iteration")), key=rank)
    return _within([_history_line(row) for row in rows], budget, "iterations")


def _within(blocks: list[str], budget: int, noun: str) -> str:
    """The blocks, in order, that fit in ``budget`` characters, and a line saying how many did not.

    >>> print(_within(["aaaa", "bbbb", "cccc"], 9, "rounds"))
    aaaa
    bbbb
    ... (1 more rounds not shown)
    """
    kept: list[str] = []
    used = 0
    for i, block in enumerate(blocks):
        if used + len(block) > budget:
            kept.append(f"... ({len(blocks) - i} more {noun} not shown)")
            break
        kept.append(block)
        used += len(block) + 1
    return "\n".join(kept)


def _history_line(row: dict[str, Any]) -> str:
    outcome = "kept" if row.get("kept") else f"rejected ({row.get('rejection') or 'not better'})"
    if not row.get("kept") and row.get("reason"):
        outcome += f": {shorten(str(row['reason']), 200)}"
    scores = ""
    if row.get("child_score") is not None:
        scores = f"; score {_num(row.get('parent_score'))} -> {_num(row.get('child_score'))}"
    edit = row.get("edit") or {}
    knobs = ", ".join(f"{k}={v}" for k, v in (edit.get("knobs") or {}).items())
    what = ", ".join(edited_templates(edit)) or (f"knobs {knobs}" if knobs else "nothing")
    flags = f"; flags: {', '.join(row['flags'])}" if row.get("flags") else ""
    if edited_templates(edit) and knobs:
        what += f"; knobs {knobs}"
    idea = shorten((row.get("analysis") or {}).get("proposal") or edit.get("rationale") or "", 200)
    return f"iteration {row['iteration']}: edit {what}: {outcome}{scores}{flags}" + (f"; idea: {idea}" if idea else "")


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"
