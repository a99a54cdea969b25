"""Per-row decoding pieces for transformers ``generate``: sampling, token budgets, JSON grammars.

``LocalBackend`` decodes many unrelated requests in one ``generate`` call, so
everything that belongs to a request has to work per row:

* ``RowSampler`` draws each row's token with the row's own temperature, top-p
  and seeded ``torch.Generator``. transformers' own sampler draws every row
  from the global RNG, so a request's samples would depend on which other
  requests happened to share its batch; with one generator per row they depend
  only on the request's seed. It returns a one-hot score row, and ``generate``
  runs greedy (``do_sample=False``) so its argmax picks exactly that token.
* ``RowTokenBudget`` stops each row at its own ``max_tokens``.
* ``GrammarMask`` constrains the rows that asked for a JSON schema, using
  xgrammar matchers (one per constrained row; ``None`` rows are left free).
  xgrammar's ``contrib.hf.LogitsProcessor`` needs a grammar for every row and
  asserts when a row that stopped early is fed padding, hence this variant.
* ``JsonGrammars`` compiles schemas once per schema and, when xgrammar is
  missing or rejects a schema, warns once and returns ``None`` (the caller
  parses and repairs free text instead).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from typing import Any, Optional, Sequence

import torch
from transformers import LogitsProcessor, StoppingCriteria

log = logging.getLogger(__name__)


def row_seed(seed: Optional[int], index: int) -> int:
    """Seed of sample ``index`` of a request; a fresh random one when the request has no seed.

    >>> row_seed(7, 0) == row_seed(7, 0), row_seed(7, 0) == row_seed(7, 1)
    (True, False)
    """
    if seed is None:
        return secrets.randbits(63)
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


class RowSampler(LogitsProcessor):
    """Sample each row with its own temperature, top-p and generator; greedy where temperature <= 0."""

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int], device):
        self.temperatures = list(temperatures)
        self.top_ps = list(top_ps)
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        for i in range(scores.shape[0]):
            chosen[i] = self._pick(scores[i].float(), i)
        one_hot = torch.full_like(scores, float("-inf"))
        one_hot.scatter_(1, chosen[:, None], 0.0)
        return one_hot

    def _pick(self, logits: torch.Tensor, i: int) -> torch.Tensor:
        temperature, top_p = self.temperatures[i], self.top_ps[i]
        if temperature <= 0:
            return logits.argmax()
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return torch.multinomial(probs, 1, generator=self.generators[i])[0]


class RowTokenBudget(StoppingCriteria):
    """Finish row i once it has generated ``max_new[i]`` tokens."""

    def __init__(self, prompt_width: int, max_new: Sequence[int], device):
        self.prompt_width = prompt_width
        self.max_new = torch.tensor(list(max_new), device=device)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return (input_ids.shape[1] - self.prompt_width) >= self.max_new


class GrammarMask(LogitsProcessor):
    """Mask each constrained row's logits to the tokens its JSON grammar allows next.

    A row stops being tracked once its matcher accepted a stop token or the
    row used its token budget: after that ``generate`` feeds it padding,
    which the grammar would reject.

    ``gates[i]`` (token ids, e.g. of ``</think>``) holds row i's grammar back
    until the row has generated that sequence: a prompt that opened a reasoning
    block gets free reasoning first and the JSON after it, as a server's
    reasoning parser does.
    """

    def __init__(self, grammars: Sequence[Any], prompt_width: int, max_new: Sequence[int], vocab_size: int,
                 gates: Optional[Sequence[Optional[Sequence[int]]]] = None):
        import xgrammar as xgr

        self._xgr = xgr
        self.prompt_width = prompt_width
        self.max_new = list(max_new)
        self.matchers = [None if g is None else xgr.GrammarMatcher(g) for g in grammars]
        self.alive = [m is not None for m in self.matchers]
        gates = list(gates) if gates is not None else [None] * len(grammars)
        self.gates = [list(g) if g else None for g in gates]
        # Generated length at which each gated row's grammar took over (None: still reasoning)
        self.opened_at: list[Optional[int]] = [None if g else 0 for g in self.gates]
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)

    def _gate_passed(self, i: int, input_ids: torch.LongTensor, generated: int) -> bool:
        if self.opened_at[i] is not None:
            return True
        gate = self.gates[i]
        if generated >= len(gate) and input_ids[i, -len(gate):].tolist() == gate:
            self.opened_at[i] = generated
            return True
        return False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids.shape[1] - self.prompt_width
        rows = []
        for i, matcher in enumerate(self.matchers):
            if not self.alive[i]:
                continue
            if generated >= self.max_new[i]:
                self.alive[i] = False
                continue
            if not self._gate_passed(i, input_ids, generated):
                continue
            if generated > self.opened_at[i]:
                accepted = matcher.accept_token(int(input_ids[i, -1]))
                if not accepted or matcher.is_terminated():
                    self.alive[i] = False
                    continue
            matcher.fill_next_token_bitmask(self.bitmask, i)
            rows.append(i)
        if rows:
            self._xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), indices=rows)
        return scores


class JsonGrammars:
    """Compiled JSON-schema grammars for one tokenizer, cached by schema."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: Sequence[int]):
        self._lock = threading.Lock()
        self._cache: dict[str, Any] = {}
        self._warned = False
        self.vocab_size = vocab_size
        try:
            import xgrammar as xgr

            info = xgr.TokenizerInfo.from_huggingface(
                tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
            )
            self._compiler = xgr.GrammarCompiler(info)
        except Exception as exc:  # noqa: BLE001 - any failure means "decode unconstrained"
            self._compiler = None
            self._warn(f"xgrammar is unavailable ({type(exc).__name__}: {exc})")

    def compile(self, schema: dict[str, Any]) -> Optional[Any]:
        """The compiled grammar for ``schema``, or None (decode unconstrained) when it cannot be built."""
        if self._compiler is None:
            return None
        # Property order is meaningful (a "plan" written before the answer), so the
        # key and the compiled grammar keep the schema's own order.
        key = json.dumps(schema)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            try:
                # Compact JSON: tiny models otherwise loop on whitespace until max_tokens.
                grammar = self._compiler.compile_json_schema(key, any_whitespace=False)
            except Exception as exc:  # noqa: BLE001 - unsupported schema features land here
                self._warn(f"xgrammar could not compile a JSON schema ({type(exc).__name__}: {exc})")
                grammar = None
            self._cache[key] = grammar
            return grammar

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "%s; JSON requests are decoded without constraints and rely on the caller's "
                "parse-and-repair step. Install or upgrade with: pip install -U xgrammar",
                why,
            )
