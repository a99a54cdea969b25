"""Principia (science and mathematics objects): verifiable questions with atomic answers.

The answer is one sentence naming one mathematical object or statement (paper
notes, "Scientific / Principia domain"). Bare integers and precision-sensitive
reals are avoided: they are guessable or fail on rounding. An equivalence judge
compares a solver's final answer with the reference and says
``{"reason": ..., "equivalent": bool}``; the score is 1.0 or 0.0, and the
``verifiable`` policy counts correct runs.
"""

from __future__ import annotations

from typing import Any

from autodata.domains import checks
from autodata.domains.base import STRING, Domain, Fields, Grade, Task, TaskFormatError, object_schema

MAX_ANSWER_CHARS = 300


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
        answer, label = task.reference_answer, "reference answer"
        too_long = (f"reference answer is {len(answer)} characters; keep it under {MAX_ANSWER_CHARS}"
                    if len(answer) > MAX_ANSWER_CHARS else None)
        found = (checks.one_sentence(answer, label), too_long, checks.not_bare_integer(answer, label),
                 checks.exact_number(answer, label))
        return [problem for problem in found if problem]

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
