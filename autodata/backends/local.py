"""In-process Hugging Face transformers backend (CPU or GPU), the default for every role.

``models.default.backend=local models.default.model=embedded`` runs the whole
pipeline on a laptop with SmolLM2-135M-Instruct (see ``autodata.backends.embedded``);
any hub id or local checkpoint works the same way. The model loads once, lazily,
on the first request (or ``check()``).

Concurrent ``complete`` calls are gathered by a ``MicroBatcher`` into one
left-padded ``generate`` call of up to ``batch_size`` rows; a request for ``n``
samples takes ``n`` rows. Each row carries its own temperature, top-p, token
budget, seed and (optionally) JSON grammar, so any requests can share a batch
and a request's samples depend on its seed only, not on its batch neighbours
(see ``autodata.backends.hf_decoding``).
"""

from __future__ import annotations

import asyncio
import threading
from functools import cached_property
from typing import Any, Optional

from autodata.backends.base import BackendError, ChatRequest, Completion, EndpointUnreachable
from autodata.backends.batching import MicroBatcher
from autodata.backends.in_process import (Job, endpoint_template_kwargs, prepare_job, resolve_weights,
                                          weights_identity)
from autodata.config import EndpointConfig
from autodata.reasoning import reasoning_close_ids, warn_if_switch_ignored, with_reasoning

_DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: Optional[str]) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(
            f"endpoint device is {device!r} but this torch ({torch.__version__}) sees no CUDA device; "
            "set device=auto or device=cpu"
        )
    return device


def resolve_dtype(dtype: Optional[str], device: str) -> str:
    if dtype in (None, "", "auto"):
        # bf16 halves memory on GPU; CPU kernels are fastest (and exact) in fp32.
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in _DTYPES:
        raise BackendError(f"endpoint dtype {dtype!r} is not supported; use auto or one of {', '.join(_DTYPES)}")
    return dtype


class LocalBackend:
    def __init__(self, endpoint: EndpointConfig):
        if not endpoint.model:
            raise BackendError("the local backend needs endpoint.model (\"embedded\", a hub id or a local path)")
        self.endpoint = endpoint
        self.model_name = endpoint.model
        self.device = resolve_device(endpoint.device)
        self.dtype = resolve_dtype(endpoint.dtype, self.device)
        self.batch_size = endpoint.batch_size or 8
        self.structured_output = bool(endpoint.structured_output)
        self._template_kwargs = endpoint_template_kwargs(endpoint)
        self.name = f"local:{self.model_name}@{self.device}"
        self._load_lock = threading.Lock()
        self.model = None
        self.tokenizer = None
        self._grammars = None
        self._batcher = MicroBatcher(self._generate_batch, self.batch_size, size=lambda job: job.request.n)

    # ---- identity and loading -------------------------------------------------------

    @cached_property
    def cache_identity(self) -> str:
        """``local:<model>:<hash of the resolved weights and dtype>``; computed on first use."""
        return weights_identity("local", self.model_name, self.dtype, self.endpoint.thinking)

    def _load(self) -> None:
        with self._load_lock:
            if self.model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = resolve_weights(self.model_name)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype))
            except (OSError, ValueError) as exc:
                raise BackendError(
                    f"could not load local model {self.model_name!r} from {path!r}: {exc}. Expected a hub id "
                    "reachable from this machine, a local checkpoint folder, or \"embedded\"."
                ) from exc
            self.attach(model.to(self.device).eval(), tokenizer)

    def attach(self, model, tokenizer) -> None:
        """Use an already-built model and tokenizer (tests plug in a tiny model this way)."""
        # Decoder-only batches must be left-padded so every row's last token is aligned.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        # Chat models often end turns with a token (e.g. <|im_end|>) that only one
        # of generation_config and the tokenizer names; either one ends a row.
        eos = model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        self.eos_ids = sorted({int(t) for t in [*eos, tokenizer.eos_token_id] if t is not None})
        if not self.eos_ids:
            raise BackendError(
                "the model names no EOS token in generation_config or tokenizer, so rows could not stop; "
                "set generation_config.eos_token_id in the checkpoint"
            )
        self.tokenizer = tokenizer
        self.model = model
        self._think_close = reasoning_close_ids(tokenizer)
        warn_if_switch_ignored(self.name, tokenizer, self.endpoint.thinking, self._template_kwargs)

    def max_context(self) -> int:
        """Tokens the model attends to (prompt + completion)."""
        self._load()
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n or self.tokenizer.model_max_length)

    def count_tokens(self, text: str) -> int:
        self._load()
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ---- the Backend protocol ---------------------------------------------------------

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self._load)
        except BackendError as exc:
            raise EndpointUnreachable(str(exc)) from exc

    async def context_length(self) -> Optional[int]:
        return await asyncio.to_thread(self.max_context)

    async def complete(self, request: ChatRequest) -> list[Completion]:
        if self.model is None:
            await asyncio.to_thread(self._load)
        job = self._prepare(request)
        return await self._batcher.submit(job)

    async def aclose(self) -> None:
        await self._batcher.aclose()

    def _prepare(self, request: ChatRequest) -> Job:
        if request.n < 1:
            raise BackendError(f"request.n must be >= 1, got {request.n}")
        context = self.max_context()
        try:
            return prepare_job(self.tokenizer, request, self._template_kwargs, context,
                               limit=f"{self.model_name} attends to {context} in all")
        except ValueError as exc:
            raise BackendError(
                f"{self.model_name} has no usable chat template ({exc}); the local backend needs an "
                "instruction-tuned model whose tokenizer ships one"
            ) from exc

    # ---- batched generation (runs in the batcher's worker thread) -------------------

    def _generate_batch(self, jobs: list[Job]) -> list[list[Completion]]:
        rows = [(j, k) for j, job in enumerate(jobs) for k in range(job.request.n)]
        results: list[list[Completion]] = [[] for _ in jobs]
        # A single request with n > batch_size arrives alone; decode it in chunks.
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            for (j, _), completion in zip(chunk, self._generate_rows(jobs, chunk), strict=True):
                results[j].append(completion)
        return results

    def _generate_rows(self, jobs: list[Job], rows: list[tuple[int, int]]) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from autodata.backends.hf_decoding import GrammarMask, RowSampler, RowTokenBudget, row_seed

        row_jobs = [jobs[j] for j, _ in rows]
        encoded = self.tokenizer.pad({"input_ids": [job.prompt_ids for job in row_jobs]}, return_tensors="pt")
        input_ids = encoded["input_ids"].to(self.device)
        attention_mask = encoded["attention_mask"].to(self.device)
        width = input_ids.shape[1]
        max_new = [job.max_new for job in row_jobs]

        processors = LogitsProcessorList()
        grammars = [self._grammar_for(job.request) for job in row_jobs]
        if any(g is not None for g in grammars):
            # A row whose prompt opened a reasoning block reasons freely; its grammar starts after </think>
            gates = [self._think_close if job.opened else None for job in row_jobs]
            processors.append(GrammarMask(grammars, width, max_new, self._vocab_size(), gates=gates))
        sampling = [job.request.sampling for job in row_jobs]
        processors.append(
            RowSampler(
                [s.temperature for s in sampling],
                [s.top_p for s in sampling],
                [row_seed(s.seed, k) for s, (_, k) in zip(sampling, rows, strict=True)],
                device=self.device,
            )
        )
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max(max_new),
                # RowSampler already chose each token; greedy just reads its choice.
                do_sample=False,
                eos_token_id=self.eos_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([RowTokenBudget(width, max_new, self.device)]),
            )
        generated = output[:, width:].tolist()
        return [
            self._completion(tokens[:budget], len(job.prompt_ids), job.opened)
            for tokens, budget, job in zip(generated, max_new, row_jobs, strict=True)
        ]

    def _completion(self, tokens: list[int], prompt_tokens: int, opened: bool = False) -> Completion:
        eos = set(self.eos_ids)
        end = next((i for i, t in enumerate(tokens) if t in eos), None)
        if end is None:
            body, finish = tokens, "length"
        else:
            body, finish = tokens[:end], "stop"
        return Completion(
            text=with_reasoning(self.tokenizer.decode(body, skip_special_tokens=True), opened=opened),
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            # The stop token was generated too, so it counts toward completion_tokens.
            completion_tokens=len(body) + (finish == "stop"),
        )

    def _grammar_for(self, request: ChatRequest) -> Any:
        if request.json_schema is None or not self.structured_output:
            return None
        if self._grammars is None:
            from autodata.backends.hf_decoding import JsonGrammars

            self._grammars = JsonGrammars(self.tokenizer, self._vocab_size(), self.eos_ids)
        return self._grammars.compile(request.json_schema)

    def _vocab_size(self) -> int:
        # The logits' width, which can exceed the tokenizer's vocabulary (padded lm_head).
        return int(self.model.get_output_embeddings().weight.shape[0])
