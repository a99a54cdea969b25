"""Reasoning blocks: one switch per role, and one written form of a completion whatever the serving path.

A reasoning model writes ``<think> ... </think>`` and then its answer. Where the
opening tag sits depends on the chat template and the server:

* Qwen3.5 (and Qwen3-Thinking-2507, DeepSeek-R1) templates open the block
  *inside the prompt* (the generation prompt ends ``<think>\\n``), so the
  completion holds only ``reasoning </think> answer`` -- or, when the token
  budget runs out mid-reasoning, just ``reasoning``, with no tag at all;
* hybrid Qwen3 templates leave the opening to the model;
* a server started with ``--reasoning-parser`` returns the reasoning in its own
  field (``reasoning_content``, or ``reasoning`` in newer vLLM) and the answer in
  ``content``.

Every backend turns what it got into the same text, :func:`with_reasoning`: an
explicit ``<think>`` wherever the completion started inside a reasoning block,
so :func:`autodata.guard.final_answer` reads every path alike, and a completion
cut off mid-reasoning has no answer (reward 0, eval score 0, counted as
truncated by its ``finish_reason``) instead of having its reasoning graded.

``models.roles.<role>.thinking`` is the one switch (null: the template's own
default). It reaches the request body (``chat_template_kwargs.enable_thinking``),
the in-process backends' template rendering and, for the trained model (the
weak solver), the GRPO trainer's ``chat_template_kwargs``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Optional

log = logging.getLogger(__name__)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
TEMPLATE_SWITCH = "enable_thinking"
"""The chat-template variable Qwen3 / Qwen3.5 (and the templates modelled on them) read."""

_OPEN_AT_END = re.compile(r"<think>\s*\Z")
_PROBE = [{"role": "user", "content": "2 + 2?"}]


def template_kwargs(thinking: Optional[bool], extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Keyword arguments for ``apply_chat_template``: ``extra`` plus the thinking switch when it is set.

    >>> template_kwargs(None, {"tools": None})
    {'tools': None}
    >>> template_kwargs(False)
    {'enable_thinking': False}
    """
    kwargs = dict(extra or {})
    if thinking is not None:
        kwargs[TEMPLATE_SWITCH] = bool(thinking)
    return kwargs


def prompt_opens_reasoning(prompt: str) -> bool:
    """True when a rendered prompt ends inside an open reasoning block (the model continues the reasoning).

    >>> prompt_opens_reasoning("<|im_start|>assistant\\n<think>\\n")
    True
    >>> prompt_opens_reasoning("<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n")
    False
    >>> prompt_opens_reasoning("<|im_start|>assistant\\n")
    False
    """
    return bool(_OPEN_AT_END.search(prompt))


def template_opens_reasoning(tokenizer: Any, kwargs: Optional[dict[str, Any]] = None) -> bool:
    """Whether this tokenizer's chat template, with these template arguments, opens the reasoning block itself."""
    rendered = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True, **(kwargs or {}))
    return prompt_opens_reasoning(rendered)


def template_ignores_switch(tokenizer: Any, extra: Optional[dict[str, Any]] = None) -> bool:
    """True when rendering with thinking on and off gives the same prompt: the switch does nothing here."""
    on = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True,
                                       **template_kwargs(True, extra))
    off = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True,
                                        **template_kwargs(False, extra))
    return on == off


def with_reasoning(text: str, *, opened: bool = False, reasoning: Optional[str] = None,
                   thinking: Optional[bool] = None, finish_reason: Optional[str] = None) -> str:
    """The completion as one text with explicit reasoning tags.

    ``opened``: the prompt opened the reasoning block (known exactly by backends that render the prompt).
    ``reasoning``: the reasoning a server's reasoning parser split off (``text`` is then the answer).
    For a server that renders the prompt itself and splits nothing, the tags in ``text`` tell: a closing tag
    with no opening one means the prompt opened it; no tag at all with ``thinking`` on and a cut-off
    completion means the budget ran out while reasoning.

    >>> with_reasoning("step 1 ... </think>\\n\\n42", opened=True)
    '<think>\\nstep 1 ... </think>\\n\\n42'
    >>> with_reasoning("step 1, step 2", opened=True)
    '<think>\\nstep 1, step 2'
    >>> with_reasoning("42", reasoning="step 1")
    '<think>\\nstep 1\\n</think>\\n\\n42'
    >>> with_reasoning("", reasoning="step 1, step 2", finish_reason="length")
    '<think>\\nstep 1, step 2'
    >>> with_reasoning("step 1 ... </think> 42")
    '<think>\\nstep 1 ... </think> 42'
    >>> with_reasoning("step 1, step 2", thinking=True, finish_reason="length")
    '<think>\\nstep 1, step 2'
    >>> with_reasoning("The answer is 42.", thinking=True, finish_reason="stop")
    'The answer is 42.'
    """
    if reasoning is not None and (reasoning or not text):
        # A parser gives the answer only once the block closed; no answer means it never did.
        return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{text}" if text else f"{THINK_OPEN}\n{reasoning}"
    if THINK_OPEN in text:
        return text
    if opened or THINK_CLOSE in text or (thinking and finish_reason == "length"):
        return f"{THINK_OPEN}\n{text}"
    return text


def thinking_suffix(thinking: Optional[bool]) -> str:
    """What the switch adds to a backend's cache identity: answers of the two modes never share a cache entry.

    >>> thinking_suffix(None), thinking_suffix(True), thinking_suffix(False)
    ('', ':thinking', ':no-thinking')
    """
    if thinking is None:
        return ""
    return ":thinking" if thinking else ":no-thinking"


def reasoning_close_ids(tokenizer: Any) -> list[int]:
    """Token ids of ``</think>`` as this tokenizer writes it (one added token for Qwen; several pieces elsewhere)."""
    return list(tokenizer.encode(THINK_CLOSE, add_special_tokens=False))


def warn_if_switch_ignored(name: str, tokenizer: Any, thinking: Optional[bool], kwargs: dict[str, Any]) -> None:
    """Say once, at load, when a role sets the thinking switch but its chat template does not read it."""
    if thinking is None:
        return
    extra = {k: v for k, v in kwargs.items() if k != TEMPLATE_SWITCH}
    try:
        ignored = template_ignores_switch(tokenizer, extra)
    except Exception:  # noqa: BLE001 - a template that cannot render the probe fails loudly at the first call
        return
    if ignored:
        log.warning("%s: thinking=%s is set, but this model's chat template renders the same prompt either way "
                    "(it has no %s switch); set thinking=null for it", name, thinking, TEMPLATE_SWITCH)
