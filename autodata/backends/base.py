"""The small protocol every model backend implements.

The generate loop, the train reward and eval only ever see ``Backend``: a
coroutine that turns one ``ChatRequest`` into ``n`` ``Completion`` objects.
Caching, accounting and JSON repair live above this layer
(``autodata.llm.LLM``, with the cache in ``autodata.cache``), so a backend is only transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    # Per-request seed; derived deterministically by the caller so a cached or
    # resumed run draws the same samples.
    seed: Optional[int] = None


@dataclass
class ChatRequest:
    # OpenAI-style messages: [{"role": "system"|"user"|"assistant", "content": str}]
    messages: list[dict[str, str]]
    sampling: Sampling = field(default_factory=Sampling)
    # Number of independent samples of this prompt
    n: int = 1
    # When set, ask the backend to constrain output to this JSON schema
    json_schema: Optional[dict[str, Any]] = None
    # Short name of the schema (response_format needs one)
    schema_name: str = "output"


@dataclass
class Completion:
    text: str
    # "stop" (natural end / EOS), "length" (hit max_tokens), or a backend-specific value
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class BackendError(RuntimeError):
    """A request failed for good (after the backend's own retries)."""


class EndpointUnreachable(BackendError):
    """No replica of an endpoint answered; the message names the URLs."""


class ModelNotServed(EndpointUnreachable):
    """The endpoint answers, but not for this model (HTTP 404): every call would fail, so the run stops like
    for an unreachable endpoint instead of skipping each document."""


# Rough characters per token: documents are cut and prompts sized by characters, since API endpoints have no
# local tokenizer (autodata/generate/documents.py, the openai backend's max_tokens clamp).
CHARS_PER_TOKEN = 4


def estimate_tokens(messages: list[dict[str, str]]) -> int:
    """
    >>> estimate_tokens([{"role": "user", "content": "x" * 40}])
    11
    """
    return sum(len(m["content"]) for m in messages) // CHARS_PER_TOKEN + 1


@runtime_checkable
class Backend(Protocol):
    # Human-readable identity, e.g. "openai:Qwen/Qwen3.5-4B@http://node1:8000/v1"
    name: str

    # Identity used in cache keys: changes whenever outputs could change
    # (model, weights path, backend kind), never with replica URLs or keys.
    cache_identity: str

    async def complete(self, request: ChatRequest) -> list[Completion]:
        """Return exactly ``request.n`` completions, or raise BackendError."""
        ...

    async def check(self) -> None:
        """Fail fast (EndpointUnreachable) when the endpoint cannot serve at all."""
        ...

    async def context_length(self) -> Optional[int]:
        """Tokens the served model attends to (prompt + completion), or None when the backend cannot tell."""
        ...

    async def aclose(self) -> None:
        ...
