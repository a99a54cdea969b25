"""Principia (science and mathematics objects): verifiable questions with atomic answers.

The answer is one sentence naming one mathematical object or statement (paper
notes, "Scientific / Principia domain"). Bare integers and precision-sensitive
reals are avoided: they are guessable or fail on rounding. An equivalence judge
compares a solver's final answer with the reference and says
``{"reason": ..., "equivalent": bool}``; the score is 1.0 or 0.0, and the
``verifiable`` policy counts correct runs.
"""

from __future__ import annotations

import re
from typing import Any

from autodata.domains import checks
from autodata.domains.base import STRING, Domain, Fields, Grade, Task, TaskFormatError, object_schema

MAX_ANSWER_CHARS = 300
# Words that may surround a number without making it more than a bare number.
_FILLER = {"the", "answer", "is", "it", "value", "result", "equals", "equal", "to", "exactly", "n", "x"}
# Three or more decimals, scientific notation, or an explicit approximation
_PRECISE_REAL = re.compile(r"\d+\.\d{3,}|\d(?:\.\d+)?\s*[eE][-+]?\d+|≈|\bapproximately\b")


class PrincipiaDomain(Domain):
    name = "principia"
    # Verifiable answers: the judge decides equivalence with the reference answer
    grading = "equivalence"
    # The paper runs 3-5 challengers in parallel on a principia object
    challengers_per_round = 3

    def _challenger_schema(self) -> dict[str, Any]:
        return object_schema({"plan": STRING, "answer_type": STRING, "question": STRING, "reference_answer": STRING})

    def parse_task(self, obj: dict) -> Task:
        f = Fields(obj, "challenger task (principia)")
        plan = f.text("plan", required=False, allow_empty=True)
        answer_type = f.text("answer_type")
        question = f.text("question")
        reference = f.text("reference_answer")
        f.raise_if_any(TaskFormatError)
        return Task(question=question, context="", reference_answer=reference, question_type=answer_type,
                    extra={"plan": plan} if plan else {})

    def domain_problems(self, task: Task, doc_text: str) -> list[str]:
        answer, problems = task.reference_answer, []
        if "\n" in answer.strip() or checks.sentence_count(answer) > 1:
            problems.append("reference answer is more than one sentence; the answer must be atomic, one sentence")
        if len(answer) > MAX_ANSWER_CHARS:
            problems.append(f"reference answer is {len(answer)} characters; keep it under {MAX_ANSWER_CHARS}")
        tokens = checks.words(answer)
        if tokens and all(t.isdigit() or t in _FILLER for t in tokens) and any(t.isdigit() for t in tokens):
            problems.append("reference answer is a bare integer, which a solver can guess; ask for an object "
                            "(an expression, a set, a condition, a structure) instead")
        if _PRECISE_REAL.search(answer):
            problems.append("reference answer is a precision-sensitive real number; ask for an exact form")
        return problems

    # ----------------------------------------------------------------- equivalence judge
    def judge_messages(self, task: Task, answer: str) -> list[dict]:
        return self.prompts.messages("judge", task=task, answer=answer)

    def judge_schema(self, task: Task) -> dict[str, Any]:
        # Reason first: a sentence of comparison before the verdict, kept short.
        return object_schema({"reason": STRING, "equivalent": {"type": "boolean"}})

    def parse_grade(self, task: Task, obj: dict) -> Grade:
        f = Fields(obj, "equivalence judge output")
        equivalent = f.boolean("equivalent")
        f.text("reason", allow_empty=True)
        f.raise_if_any()
        return Grade(score=1.0 if equivalent else 0.0, correct=equivalent, raw=obj)
