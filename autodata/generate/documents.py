"""How much of a source document the generate loop sends, and the cut.

Every role that reads the document must fit it into its context beside its own
prompt and answer: the challenger (and, for legal, its extractor step), the
quality verifier, and the strong solver when ``generate.strong_sees_document``.
The cap, in tokens, is the smallest over those roles of

    (context length - prompt without the document - max_tokens) * DOCUMENT_ROOM_SHARE

The context length is the endpoint's ``context_length`` when set, else what its
backend reports (an OpenAI-compatible server's ``max_model_len`` in GET
/v1/models, the local model's config). A role whose context length nobody knows
does not bound the cap; when none is known, documents are sent whole (a server
refuses an over-long prompt with an error that names its limit). The
challenger endpoint's ``max_document_tokens``, when set, overrides all of this
(the CPU experiment sets 320). A cut is recorded as a warning in the document's
rounds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from autodata.acceptance import FailureReason
from autodata.backends.base import CHARS_PER_TOKEN, estimate_tokens
from autodata.config import RootConfig
from autodata.domains.base import (
    DIAGNOSIS_CHARS_IN_FEEDBACK,
    QUESTION_CHARS_IN_FEEDBACK,
    Domain,
    FailedAttempt,
    Task,
)
from autodata.llm import LLM

log = logging.getLogger(__name__)

# Text as dense as 3 characters per token needs a third more tokens than CHARS_PER_TOKEN counts, so a cap
# derived from a context length leaves a quarter of the room spare.
DOCUMENT_ROOM_SHARE = 0.75


@dataclass(frozen=True)
class DocumentCap:
    # Tokens kept from each document; None sends documents whole
    tokens: Optional[int]
    # Where the number came from (recorded in stats.json)
    source: str

    def row(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "source": self.source}


def truncate_document(text: str, max_tokens: Optional[int]) -> tuple[str, Optional[str]]:
    """The document cut to about ``max_tokens`` tokens, and the warning to record when it was cut.

    >>> truncate_document("abcdefghij", 2)
    ('abcdefgh', 'document truncated from 10 to 8 characters (~2 tokens)')
    >>> truncate_document("abcdefghij", None)
    ('abcdefghij', None)
    """
    if max_tokens is None:
        return text, None
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text, None
    return text[:limit], f"document truncated from {len(text)} to {limit} characters (~{max_tokens} tokens)"


def prompt_overheads(cfg: RootConfig, domain: Domain, challengers_per_round: int, task_tokens: int) -> dict[str, int]:
    """Tokens of each document-reading role's longest prompt without the document.

    ``task_tokens`` bounds the task a QV or solver prompt carries: the challenger wrote it within its max_tokens.
    """
    gen = cfg.generate
    # The challenger's prompt grows with the feedback on earlier attempts: in the last round every attempt of
    # every earlier round (each failing challenger of a round is one), at their shortened length.
    history = [FailedAttempt(i + 1, FailureReason.TOO_EASY, "x" * QUESTION_CHARS_IN_FEEDBACK,
                             "x" * DIAGNOSIS_CHARS_IN_FEEDBACK, 0.0, 0.0)
               for i in range(max(0, gen.max_rounds - 1) * challengers_per_round)]
    # A one-character document keeps the template's document block in the rendering.
    writer = [domain.challenger_messages(".", history, method, gen) for method in domain.METHODS]
    if domain.has_extractor:
        writer.append(domain.extractor_messages("."))
    overheads = {"challenger": max(estimate_tokens(m) for m in writer)}
    empty = Task(question="", context="", reference_answer="")
    if gen.quality_verifier or cfg.method.qv_filter:
        overheads["quality_verifier"] = estimate_tokens(domain.qv_messages(empty, ".")) + task_tokens
    if gen.strong_sees_document:
        overheads["strong_solver"] = estimate_tokens(domain.solver_messages(empty, ".")) + task_tokens
    return overheads


async def document_cap(cfg: RootConfig, llm: LLM, domain: Domain, challengers_per_round: int) -> DocumentCap:
    """The cap for this run; raises ValueError when a role's context leaves no room for a document."""
    override = llm.endpoint("challenger").max_document_tokens
    if override is not None:
        return DocumentCap(int(override), "max_document_tokens of the challenger's endpoint (config)")
    cap: Optional[DocumentCap] = None
    unknown = []
    task_tokens = int(llm.endpoint("challenger").max_tokens)
    for role, overhead in prompt_overheads(cfg, domain, challengers_per_round, task_tokens).items():
        endpoint = llm.endpoint(role)
        context, where = endpoint.context_length, f"models.*.context_length of {role}"
        if context is None:
            backend = llm.backends.get(role)
            context = await backend.context_length() if backend is not None else None
            where = f"reported by {backend.name}" if backend is not None else ""
        if context is None:
            unknown.append(role)
            continue
        answer = int(endpoint.max_tokens)
        tokens = int((context - overhead - answer) * DOCUMENT_ROOM_SHARE)
        if tokens < 1:
            raise ValueError(
                f"{role}: a context of {context} tokens ({where}) leaves no room for a document after its prompt "
                f"(~{overhead} tokens) and max_tokens ({answer}); lower models.roles.{role}.max_tokens or "
                f"generate.max_rounds, or set models.default.max_document_tokens"
            )
        if cap is None or cap.tokens is None or tokens < cap.tokens:
            cap = DocumentCap(tokens, f"{role}: ({context} context tokens, {where}, - ~{overhead} prompt - "
                                      f"{answer} max_tokens) x {DOCUMENT_ROOM_SHARE}")
    if cap is None:
        cap = DocumentCap(None, f"no context length known for {', '.join(unknown)}: documents are sent whole; set "
                                "models.roles.<role>.context_length or models.default.max_document_tokens")
        log.warning("%s", cap.source)
    return cap
