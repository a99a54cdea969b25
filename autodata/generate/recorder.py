"""Per-round call log: every prompt, raw output, token count and timing of one round.

The loop calls models through a ``RoundRecorder`` so ``rounds.jsonl`` can show
exactly what each role saw and said, and so calls and tokens per role can be
recomputed from the rows alone (which survives a resume, unlike in-memory counters).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, TypeVar

from autodata.backends.base import Completion
from autodata.llm import LLM, JsonResult

T = TypeVar("T")


class RoundRecorder:
    def __init__(self, llm: LLM, seed_prefix: str, on_call: Optional[Callable[[], None]] = None):
        """``on_call`` is told after every completed call (the progress bar reads the LLM's counters then)."""
        self.llm = llm
        self.seed_prefix = seed_prefix
        self.on_call = on_call
        self.calls: list[dict[str, Any]] = []

    def _record(self, role: str, step: str, messages: list[dict], completions: list[Completion], started: float,
                **extra: Any) -> None:
        self.calls.append({
            "role": role,
            "step": step,
            "messages": messages,
            "outputs": [c.text for c in completions],
            "finish_reasons": [c.finish_reason for c in completions],
            "prompt_tokens": sum(c.prompt_tokens for c in completions),
            "completion_tokens": sum(c.completion_tokens for c in completions),
            "seconds": round(time.perf_counter() - started, 4),
            **extra,
        })
        if self.on_call is not None:
            self.on_call()

    async def chat(self, role: str, step: str, messages: list[dict], *, n: int = 1,
                   max_tokens: Optional[int] = None) -> list[Completion]:
        started = time.perf_counter()
        completions = await self.llm.chat(role, messages, n=n, seed_key=f"{self.seed_prefix}/{step}",
                                          max_tokens=max_tokens)
        self._record(role, step, messages, completions, started)
        return completions

    async def chat_json(self, role: str, step: str, messages: list[dict], *, schema: dict,
                        parse: Callable[[Any], T], schema_name: str = "output") -> JsonResult[T]:
        started = time.perf_counter()
        result = await self.llm.chat_json(role, messages, schema=schema, parse=parse,
                                          seed_key=f"{self.seed_prefix}/{step}", schema_name=schema_name)
        self._record(role, step, messages, result.completions, started, parse_error=result.error,
                     repaired=result.repaired)
        return result

    def tokens_by_role(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for call in self.calls:
            slot = out.setdefault(call["role"], {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
            slot["calls"] += 1
            slot["prompt_tokens"] += call["prompt_tokens"]
            slot["completion_tokens"] += call["completion_tokens"]
        return out
