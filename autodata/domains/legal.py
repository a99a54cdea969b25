"""Legal: a source of law turned into a client's question, graded PRBench-style.

Steps beyond the shared loop (paper notes, "Legal domain"):
- an extractor marks each document suitable or not; unsuitable ones are skipped;
- the writer invents a new client scenario and writes the question in the
  client's voice; the rubric has 15-25 criteria {number, criterion, category,
  capability, weight_class, weight}, positive weights in bands (+8..10, +5..7,
  +2..4), at least one negative (-1..-10) phrased "Asserts that X";
- a loop judge reads every weak and strong rollout and says accept or improve
  (``acceptance.apply_loop_judge``). With the paper's ``loop_judge`` policy it
  decides alone, with no score threshold; with ``legal_gap`` it can only veto a
  task the framework's gap rule accepted. An invalid or unsure verdict is improve.
Hard rules (question body over ``max_question_chars``, a case recap or an exam
question) are framework checks here, so they cost no solver calls; the loop
judge's verdict is also forced to improve by them (``hard_rule_problems``), which
holds when the structural checks are off.
"""

from __future__ import annotations

import re
from typing import Any

from autodata.domains.base import STRING, Fields, Task, TaskFormatError, object_schema
from autodata.domains.rubric import RubricDomain

# Weight class -> inclusive weight band.
WEIGHT_BANDS: dict[str, tuple[int, int]] = {
    "critically_important": (8, 10),
    "important": (5, 7),
    "slightly_important": (2, 4),
    "detrimental": (-10, -1),
}
NEGATIVE_PREFIX = "Asserts that"

_CLIENT_VOICE = re.compile(r"\b(I|I'm|I've|I'd|my|me|mine|we|we're|our|us)\b", re.IGNORECASE)
# A client writes about their own situation; these read like a casebook or an exam.
_CASE_RECAP = [
    (re.compile(r"\b[A-Z][\w.'&-]*\s+v\.?\s+[A-Z]"), "cites a case by name (X v. Y)"),
    (re.compile(r"\bthe (?:court|judge|jury) (?:held|ruled|found|concluded)\b", re.IGNORECASE), "recaps a holding"),
]
_EXAM = [
    (re.compile(r"\bwhich of the following\b", re.IGNORECASE), "asks 'which of the following'"),
    (re.compile(r"\bmultiple[- ]choice\b", re.IGNORECASE), "is multiple choice"),
    (re.compile(r"\b(?:discuss|analy[sz]e)\s+(?:the|all|whether|any)\b", re.IGNORECASE), "gives an essay instruction"),
    (re.compile(r"\bidentify (?:all |the )?(?:legal )?issues\b", re.IGNORECASE), "asks to spot issues"),
    (re.compile(r"\b(?:exam|essay|hypothetical|the student)\b", re.IGNORECASE), "uses exam vocabulary"),
    (re.compile(r"(?m)^\s*\(?[a-dA-D][).]\s"), "lists answer options"),
]

LOOP_JUDGE_FIELDS = ("weak_pattern", "strong_pattern", "gap_interpretation", "rubric_concerns",
                     "grpo_suitability", "verdict", "verdict_reason", "suggestion_for_writer")
SUITABILITY = ("high", "medium", "low")
VERDICTS = ("accept", "improve")


class LegalDomain(RubricDomain):
    name = "legal"
    has_extractor = True
    has_loop_judge = True
    template_names = RubricDomain.template_names + ("extractor", "loop_judge")
    editable_templates = RubricDomain.editable_templates + ("extractor",)
    protected_templates = RubricDomain.protected_templates + ("loop_judge",)
    # "the document" is left out: a client may well mention a document they signed.
    self_references = ("the passage", "the excerpt", "the text above", "the source text", "the provided text",
                       "the provided statute")

    extractor_schema = object_schema({"reason": STRING, "suitable": {"type": "boolean"}})
    loop_judge_schema = object_schema({
        "weak_pattern": STRING,
        "strong_pattern": STRING,
        "gap_interpretation": STRING,
        "rubric_concerns": STRING,
        "grpo_suitability": {"type": "string", "enum": list(SUITABILITY)},
        "verdict": {"type": "string", "enum": list(VERDICTS)},
        "verdict_reason": STRING,
        "suggestion_for_writer": STRING,
    })

    # ----------------------------------------------------------------- extractor
    def extractor_messages(self, doc_text: str) -> list[dict]:
        return self.prompts.messages("extractor", document=doc_text)

    def parse_extractor(self, obj: dict) -> tuple[bool, str]:
        f = Fields(obj, "extractor output")
        reason = f.text("reason", allow_empty=True)
        suitable = f.boolean("suitable")
        f.raise_if_any()
        return suitable, reason

    # ----------------------------------------------------------------- writer
    def _challenger_schema(self) -> dict[str, Any]:
        criterion = object_schema({
            "number": {"type": "integer", "minimum": 1, "maximum": self.cfg.rubric_max},
            "criterion": STRING,
            "category": STRING,
            "capability": STRING,
            "weight_class": {"type": "string", "enum": list(WEIGHT_BANDS)},
            "weight": self.weight_schema(),
        })
        return object_schema({
            "plan": STRING,
            "practice_area": STRING,
            "question": STRING,
            "reference_answer": STRING,
            "rubric": self.rubric_array(criterion),
        })

    def parse_task(self, obj: dict) -> Task:
        f = Fields(obj, "challenger task (legal)")
        plan = f.text("plan", required=False, allow_empty=True)
        practice_area = f.text("practice_area")
        question = f.text("question")
        reference = f.text("reference_answer")
        rubric = self.parse_rubric(f, "{number, criterion, category, capability, weight_class, weight}",
                                   extra=lambda item, path: {
            "number": f.integer("number", obj=item, path=f"{path}.number"),
            "capability": f.text("capability", obj=item, path=f"{path}.capability", allow_empty=True),
            "weight_class": f.choice("weight_class", tuple(WEIGHT_BANDS), obj=item, path=f"{path}.weight_class"),
        })
        f.raise_if_any(TaskFormatError)
        # The client's question carries every fact; there is no separate context.
        return Task(question=question, context="", reference_answer=reference, rubric=rubric,
                    question_type=practice_area, extra={"plan": plan} if plan else {})

    # ----------------------------------------------------------------- hard rules
    def hard_rule_problems(self, task: Task) -> list[str]:
        """The paper's hard rules: a question over max_question_chars, a case recap or an exam question."""
        problems = []
        q = task.question
        if len(q) > self.cfg.max_question_chars:
            problems.append(f"question is {len(q)} characters; keep the client's question within "
                            f"{self.cfg.max_question_chars}")
        for pattern, what in _CASE_RECAP:
            if pattern.search(q):
                problems.append(f"question reads like a case recap ({what}); invent a new client scenario")
        for pattern, what in _EXAM:
            if pattern.search(q):
                problems.append(f"question reads like an exam ({what}); write what a real client would ask")
        return problems

    def domain_problems(self, task: Task, doc_text: str) -> list[str]:
        problems = self.rubric_problems(task.rubric) + self.hard_rule_problems(task)
        if not _CLIENT_VOICE.search(task.question):
            problems.append("question is not in the client's voice; write it as the client describing their "
                            "own situation (I, my, we, our)")
        for i, c in enumerate(task.rubric, start=1):
            number = c.extra.get("number")
            if number != i:
                problems.append(f"criterion {i} is numbered {number}; number the criteria 1..{len(task.rubric)} in order")
            band = WEIGHT_BANDS.get(c.extra.get("weight_class", ""))
            if band and not band[0] <= c.weight <= band[1]:
                problems.append(f"criterion {i} has weight {c.weight} outside its class "
                                f"{c.extra['weight_class']} ({band[0]}..{band[1]})")
            if c.weight < 0 and not c.criterion.startswith(NEGATIVE_PREFIX):
                problems.append(f"criterion {i} is negative but does not start with '{NEGATIVE_PREFIX}'; "
                                f"phrase penalties as '{NEGATIVE_PREFIX} <the wrong claim>'")
        return problems

    # ----------------------------------------------------------------- loop judge
    def loop_judge_messages(self, task: Task, weak_answers: list[str], strong_answers: list[str],
                            weak_scores: list[float], strong_scores: list[float]) -> list[dict]:
        weak = [{"answer": a, "score": round(s, 3)} for a, s in zip(weak_answers, weak_scores)]
        strong = [{"answer": a, "score": round(s, 3)} for a, s in zip(strong_answers, strong_scores)]
        return self.prompts.messages("loop_judge", task=task, weak=weak, strong=strong, cfg=self.cfg)

    def parse_loop_judge(self, obj: dict) -> dict[str, Any]:
        """Read the verdict; anything invalid or unsure becomes ``improve`` (never accept by default)."""
        source = obj if isinstance(obj, dict) else {}
        out: dict[str, Any] = {k: str(source.get(k, "")).strip() for k in LOOP_JUDGE_FIELDS}
        problems = [k for k in LOOP_JUDGE_FIELDS if not isinstance(source.get(k), str)]
        if out["grpo_suitability"] not in SUITABILITY:
            problems.append("grpo_suitability")
            out["grpo_suitability"] = "low"
        if out["verdict"] not in VERDICTS or problems:
            out["verdict"] = "improve"
            if problems:
                out["verdict_reason"] = (f"loop judge output invalid ({', '.join(sorted(set(problems)))}); "
                                         f"treated as improve. {out['verdict_reason']}").strip()
        return out
