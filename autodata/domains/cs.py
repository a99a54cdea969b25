"""Computer-science papers: reasoning questions graded by a signed, weighted rubric.

Challenger output (paper notes, "CS domain"): question_type, 2-3 reasoning
tags, a context that situates the solver without leaking the answer, one
question testing reasoning rather than recall, a reference answer and 10-15
criteria {criterion, weight (int), category}. The judge does not see the
reference answer (``domain.judge_sees_reference`` is false by default), so it
grades against the rubric, not against one phrasing of the answer.
"""

from __future__ import annotations

from typing import Any

from autodata.domains.base import STRING, Fields, Task, TaskFormatError, object_schema
from autodata.domains.rubric import RubricDomain


class CSDomain(RubricDomain):
    name = "cs"

    def _challenger_schema(self) -> dict[str, Any]:
        criterion = object_schema({"criterion": STRING, "weight": self.weight_schema(), "category": STRING})
        return object_schema({
            # Reasoning before the task: the CoT baseline's "reason, then write", and a plan for the agentic writer
            "plan": STRING,
            "question_type": STRING,
            "tags": {"type": "array", "items": STRING, "minItems": 2, "maxItems": 3},
            "context": STRING,
            "question": STRING,
            "reference_answer": STRING,
            "rubric": self.rubric_array(criterion),
        })

    def parse_task(self, obj: dict) -> Task:
        f = Fields(obj, "challenger task (cs)")
        plan = f.text("plan", required=False, allow_empty=True)
        question_type = f.text("question_type")
        tags = []
        for i, tag in enumerate(f.array("tags", min_items=2, max_items=3)):
            if isinstance(tag, str) and tag.strip():
                tags.append(tag.strip())
            else:
                f.problems.append(f"tags[{i}]: expected a non-empty string naming a reasoning skill, found {tag!r}")
        context = f.text("context")
        question = f.text("question")
        reference = f.text("reference_answer")
        rubric = self.parse_rubric(f, "{criterion, weight, category}")
        f.raise_if_any(TaskFormatError)
        return Task(question=question, context=context, reference_answer=reference, rubric=rubric,
                    question_type=question_type, tags=tags, extra={"plan": plan} if plan else {})

    def domain_problems(self, task: Task, doc_text: str) -> list[str]:
        return self.rubric_problems(task.rubric)
