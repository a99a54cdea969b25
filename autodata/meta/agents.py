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
        self.implementer_schema = object_schema({
            "rationale": STRING,
            "template": {"type": "string", "enum": [*editable, "none"]},
            "mode": {"type": "string", "enum": ["replace", "diff", "none"]},
            "text": STRING,
            "knobs": {"type": "array", "items": object_schema({
                "name": {"type": "string", "enum": list(KNOBS)}, "value": STRING})},
        })

    def analyzer_messages(self, trajectories: str, history: str, knobs: dict[str, Any],
                          score_name: str) -> list[dict[str, str]]:
        return self.prompts.messages("analyzer", domain=self.domain_name, editable=self.editable, knobs=knobs,
                                     trajectories=trajectories or "(no rounds)",
                                     history=history or "(no earlier iterations)", targets=self.targets,
                                     score_name=score_name)

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

    def implementer_messages(self, analysis: dict[str, str], templates: dict[str, str],
                             knobs: dict[str, Any]) -> list[dict[str, str]]:
        target = analysis.get("target") or ""
        text = templates.get(target, "") if target in self.editable else ""
        summary = analysis["analysis"] + (f"\n\nProposal: {analysis['proposal']}" if analysis.get("proposal") else "")
        return self.prompts.messages("implementer", analysis=summary, target=target, template_text=text,
                                     knobs=knobs, editable=self.editable)


def trajectory_digest(rounds: list[dict[str, Any]], budget: int) -> str:
    """What happened on the minibatch, round by round, within ``budget`` characters: status and reason, the
    question, solver means and judge verdict counts, the quality verifier's feedback and the diagnosis.

    >>> print(trajectory_digest([{"document_id": "d1", "round": 1, "status": "rejected", "reason": "too_easy",
    ...     "task": {"question": "Predict x."}, "weak_mean": 0.9, "strong_mean": None, "weak": [{"met": [True, False]}],
    ...     "diagnosis": "General knowledge."}], 1000))
    document d1, round 1: rejected (too_easy)
      question: Predict x.
      weak mean 0.90 (criteria met 1/2)
      diagnosis: General knowledge.
    """
    return _within([_round_block(row) for row in rounds], budget, "rounds")


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
    scores = ""
    if row.get("child_score") is not None:
        scores = f"; score {_num(row.get('parent_score'))} -> {_num(row.get('child_score'))}"
    edit = row.get("edit") or {}
    what = edit.get("template") or ("knobs " + ", ".join(f"{k}={v}" for k, v in (edit.get("knobs") or {}).items())
                                    if edit.get("knobs") else "nothing")
    flags = f"; flags: {', '.join(row['flags'])}" if row.get("flags") else ""
    idea = shorten((row.get("analysis") or {}).get("proposal") or edit.get("rationale") or "", 200)
    return f"iteration {row['iteration']}: edit {what}: {outcome}{scores}{flags}" + (f"; idea: {idea}" if idea else "")


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"
