"""What the two in-process backends (``local``: transformers, ``vllm``: the offline engine) share.

Both load a model name into this process, key the response cache on the weights they resolve to, and turn a
chat request into token ids with the model's own chat template before batching. Written once here so the two
cannot drift: a cache key that changed for one backend would silently miss every cached response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from autodata.backends.base import BackendError, ChatRequest
from autodata.backends.embedded import model_fingerprint, resolve_model
from autodata.config import EndpointConfig
from autodata.reasoning import prompt_opens_reasoning, template_kwargs, thinking_suffix


@dataclass
class Job:
    """One request, rendered and tokenized, waiting in a backend's micro-batcher."""

    request: ChatRequest
    prompt_ids: list[int]
    max_new: int
    # The rendered prompt ends inside an open reasoning block (Qwen3.5 with thinking on)
    opened: bool = False


def weights_identity(kind: str, model: str, dtype: str, thinking: Optional[bool]) -> str:
    """``<kind>:<model>:<hash of the resolved weights and dtype>``, plus the thinking switch.

    Existing response caches are keyed on this string: change it and every cached answer misses.
    """
    return f"{kind}:{model}:{model_fingerprint(model, dtype=dtype)}" + thinking_suffix(thinking)


def resolve_weights(model: str) -> str:
    """The path or hub id to load for ``model`` ("embedded" becomes the cached copy), as a BackendError if not."""
    try:
        return resolve_model(model)
    except RuntimeError as exc:  # the embedded model's package is missing or broken
        raise BackendError(str(exc)) from exc


def endpoint_template_kwargs(endpoint: EndpointConfig) -> dict[str, Any]:
    """``apply_chat_template`` arguments: the role's thinking switch and any others (autodata/reasoning.py)."""
    return template_kwargs(endpoint.thinking, (endpoint.extra_body or {}).get("chat_template_kwargs"))


def prepare_job(tokenizer: Any, request: ChatRequest, kwargs: dict[str, Any], context: int, limit: str) -> Job:
    """Render ``request`` with the chat template and size its completion to the room ``context`` leaves.

    ``limit`` finishes the too-long error's sentence "prompt is N tokens but ...", in the backend's own terms.
    A tokenizer without a chat template raises transformers' ValueError unchanged.
    """
    text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True, **kwargs)
    prompt_ids = tokenizer.encode(text, add_special_tokens=False)
    if len(prompt_ids) >= context:
        raise BackendError(
            f"prompt is {len(prompt_ids)} tokens but {limit}; shorten the document before the call "
            "(backend.count_tokens / max_context, or lower models.*.max_document_tokens)"
        )
    # The completion gets whatever room the context leaves, up to max_tokens;
    # a cut-short answer reports finish_reason "length" like a server would.
    max_new = max(1, min(request.sampling.max_tokens, context - len(prompt_ids)))
    return Job(request, prompt_ids, max_new, opened=prompt_opens_reasoning(text))
