"""Per-round call log: what each call sent (by reference), its raw output, token count and timing.

The loop calls models through a ``RoundRecorder`` so ``rounds.jsonl`` can show what each role was asked and
said, and so calls and tokens per role can be recomputed from the rows alone (which survives a resume, unlike
in-memory counters).

A call's prompt is kept as a reference, not as text: the template that rendered it, the harness variant, the
sha256 of the messages sent and, when the prompt carried the source document, the document's id, hash and
length. The document is in the corpus once; repeating it in every call made a paper-scale ``rounds.jsonl`` GBs.
``autodata show RUN_DIR DOC ROUND STEP`` (autodata/generate/trajectory.py) renders a call again and checks it
against the hash. ``generate.prompts_in_rounds=full`` also keeps the messages themselves (small debugging runs).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional, TypeVar

from autodata.backends.base import Completion
from autodata.corpus import text_sha256
from autodata.llm import LLM, JsonResult

T = TypeVar("T")

# generate.prompts_in_rounds: "ref" keeps a reference to each call's prompt, "full" the messages beside it
PROMPT_MODES = ("ref", "full")


def messages_sha256(messages: list[dict]) -> str:
    """The hash a call's prompt reference records: of the messages' canonical JSON, so key order and whitespace
    do not matter.

    >>> messages_sha256([{"role": "user", "content": "hi"}]) == messages_sha256([{"content": "hi", "role": "user"}])
    True
    """
    return text_sha256(json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def document_ref(doc_id: str, text: str) -> dict[str, Any]:
    """How a call names the document it sent: ``text`` as sent (after the run's cut), by hash and length.

    >>> document_ref("d1", "abc")["chars"]
    3
    """
    return {"id": doc_id, "sha256": text_sha256(text), "chars": len(text)}


def prompt_ref(template: str, variant: str, messages: list[dict], document: Optional[dict[str, Any]]) -> dict[str, Any]:
    """What a call row keeps of its prompt. ``document`` is the ``document_ref`` of the source document when the
    prompt carried it, else None."""
    return {"template": template, "variant": variant, "sha256": messages_sha256(messages),
            "chars": sum(len(str(m.get("content") or "")) for m in messages), "document": document}


class RoundRecorder:
    def __init__(self, llm: LLM, seed_prefix: str, on_call: Optional[Callable[[], None]] = None, *,
                 variant: str = "", document: Optional[dict[str, Any]] = None, keep_messages: bool = False):
        """``on_call`` is told after every completed call (the progress bar reads the LLM's counters then).
        ``variant`` (the harness's content hash) and ``document`` (the round's ``document_ref``) go into each
        call's prompt reference; ``keep_messages`` also keeps the messages (generate.prompts_in_rounds=full)."""
        self.llm = llm
        self.seed_prefix = seed_prefix
        self.on_call = on_call
        self.variant = variant
        self.document = document
        self.keep_messages = keep_messages
        self.calls: list[dict[str, Any]] = []

    def _record(self, role: str, step: str, messages: list[dict], completions: list[Completion], started: float,
                template: str, with_document: bool, **extra: Any) -> None:
        if with_document and self.document is None:
            raise ValueError(f"call {step!r} sent the document, but its round's recorder was given no document_ref")
        call: dict[str, Any] = {
            "role": role,
            "step": step,
            "prompt": prompt_ref(template, self.variant, messages, self.document if with_document else None),
        }
        if self.keep_messages:
            call["messages"] = messages
        call.update({
            "outputs": [c.text for c in completions],
            "finish_reasons": [c.finish_reason for c in completions],
            "prompt_tokens": sum(c.prompt_tokens for c in completions),
            "completion_tokens": sum(c.completion_tokens for c in completions),
            "seconds": round(time.perf_counter() - started, 4),
            **extra,
        })
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call()

    async def chat(self, role: str, step: str, messages: list[dict], *, template: str, with_document: bool,
                   n: int = 1, max_tokens: Optional[int] = None) -> list[Completion]:
        """``template`` names the prompt (its reference's "template"); ``with_document``: the messages carry the
        source document. Both are stated by the caller, which knows what it rendered."""
        started = time.perf_counter()
        completions = await self.llm.chat(role, messages, n=n, seed_key=f"{self.seed_prefix}/{step}",
                                          max_tokens=max_tokens)
        self._record(role, step, messages, completions, started, template, with_document)
        return completions

    async def chat_json(self, role: str, step: str, messages: list[dict], *, template: str, with_document: bool,
                        schema: dict, parse: Callable[[Any], T], schema_name: str = "output") -> JsonResult[T]:
        started = time.perf_counter()
        result = await self.llm.chat_json(role, messages, schema=schema, parse=parse,
                                          seed_key=f"{self.seed_prefix}/{step}", schema_name=schema_name)
        self._record(role, step, messages, result.completions, started, template, with_document,
                     parse_error=result.error, repaired=result.repaired)
        return result

    def tokens_by_role(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for call in self.calls:
            slot = out.setdefault(call["role"], {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
            slot["calls"] += 1
            slot["prompt_tokens"] += call["prompt_tokens"]
            slot["completion_tokens"] += call["completion_tokens"]
        return out
