"""A scripted backend: drives the generate loop's logic in unit tests, no model involved.

A script is a function ``(role, request, call_number) -> str | list[str]``; it
sees the role and the messages, so a test can make the weak solver good or bad
and the judge grade answers by their content.
"""

from __future__ import annotations

import json
from typing import Callable, Optional, Union

from autodata.backends.base import BackendError, ChatRequest, Completion
from autodata.config import META_ROLES, ROLES
from autodata.llm import LLM

Script = Callable[[str, ChatRequest, int], Union[str, list[str]]]


class ScriptedBackend:
    def __init__(self, role: str, script: Script, context: Optional[int] = None):
        self.role = role
        self.script = script
        self.name = f"scripted:{role}"
        self.cache_identity = f"scripted:{role}"
        self.requests: list[ChatRequest] = []
        # What context_length() reports (None: unknown, like an API that lists no max_model_len)
        self.context = context

    async def complete(self, request: ChatRequest) -> list[Completion]:
        self.requests.append(request)
        out = self.script(self.role, request, len(self.requests))
        texts = out if isinstance(out, list) else [out] * request.n
        if len(texts) != request.n:
            raise BackendError(f"script returned {len(texts)} texts for n={request.n}")
        return [Completion(text=t, finish_reason="stop", prompt_tokens=10, completion_tokens=5) for t in texts]

    async def check(self) -> None:
        return None

    async def context_length(self) -> Optional[int]:
        return self.context

    async def aclose(self) -> None:
        return None


def scripted_llm(models, script: Script, cache=None, seed: int = 0) -> tuple[LLM, dict[str, ScriptedBackend]]:
    backends = {role: ScriptedBackend(role, script) for role in ROLES + META_ROLES}
    return LLM(models, cache=cache, seed=seed, backends=backends), backends


def cs_task(question: str = "Predict the result of evaluating the expression and justify each step.",
            n_pos: int = 8, n_neg: int = 3) -> str:
    rubric = [{"criterion": f"States consequence {i} of the rule", "weight": 5, "category": "reasoning"}
              for i in range(n_pos)]
    rubric += [{"criterion": f"Claims falsehood number {i}", "weight": -3, "category": "error"} for i in range(n_neg)]
    return json.dumps({
        "plan": "test the rule on an unusual case",
        "question_type": "prediction",
        "tags": ["causal reasoning", "counterfactual"],
        "context": "A language evaluates operands left to right and short-circuits boolean operators.",
        "question": question,
        "reference_answer": "It evaluates to False without calling g, because and short-circuits.",
        "rubric": rubric,
    })


def verdicts(n: int, met_positive: int, n_pos: int) -> str:
    """Judge output: the first ``met_positive`` positive criteria met, no penalty met."""
    return json.dumps({"verdicts": [{"id": i + 1, "met": i < met_positive} for i in range(n)]})


def last_user(request: ChatRequest) -> str:
    return request.messages[-1]["content"]
