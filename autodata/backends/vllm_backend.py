"""vLLM offline-engine backend: one ``vllm.LLM`` in this process, fed by a micro-batcher.

Chosen with ``models.default.backend=vllm models.default.model=<hub id or path>``
on a GPU node (``pip install 'autodata[gpu]'``). vLLM is imported only when this
backend is built, so CPU installs never need it.

Concurrent ``complete`` calls are gathered into one ``LLM.generate`` call (vLLM
schedules the sequences inside it); each request keeps its own
``SamplingParams`` (n, temperature, top-p, max_tokens, seed) and, for JSON
requests, its own structured-output schema.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from functools import cached_property
from typing import Any, Optional

from autodata.backends.base import BackendError, ChatRequest, Completion, EndpointUnreachable
from autodata.backends.batching import MicroBatcher
from autodata.backends.in_process import (Job, endpoint_template_kwargs, prepare_job, resolve_weights,
                                          weights_identity)
from autodata.config import EndpointConfig
from autodata.reasoning import warn_if_switch_ignored, with_reasoning

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'autodata[gpu]'"


def import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise BackendError(
            f"backend 'vllm' needs the vllm package, which is not importable here ({exc}). "
            f"On a CUDA machine install it with: {INSTALL_HINT}; on CPU use backend=local or backend=openai."
        ) from exc
    return vllm


def json_schema_params(schema: dict[str, Any]) -> dict[str, Any]:
    """SamplingParams keyword for a JSON-schema constraint, in the installed vLLM's API."""
    try:
        # vLLM >= 0.10.2; the guided_* names were removed in 0.12.
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


def engine_reasoning_kwargs(parser: Optional[str]) -> dict[str, Any]:
    """``vllm.LLM`` arguments that make structured output start after the reasoning block (vLLM >= 0.11 reads
    the parser from its structured-outputs config, older engines from ``reasoning_parser``)."""
    if not parser:
        return {}
    try:
        from vllm.config import StructuredOutputsConfig  # noqa: F401 - present from vLLM 0.11

        return {"structured_outputs_config": {"reasoning_parser": parser}}
    except ImportError:
        return {"reasoning_parser": parser}


class VLLMBackend:
    def __init__(self, endpoint: EndpointConfig):
        if not endpoint.model:
            raise BackendError("the vllm backend needs endpoint.model (a hub id or a local path)")
        self.endpoint = endpoint
        self.model_name = endpoint.model
        self.name = f"vllm:{self.model_name}"
        self.structured_output = bool(endpoint.structured_output)
        self._template_kwargs = endpoint_template_kwargs(endpoint)
        self._lock = threading.Lock()
        self._warned_grammar = False
        self.llm = None
        self.tokenizer = None
        # vLLM schedules inside one generate call, so hand it many sequences at once.
        capacity = max(endpoint.max_concurrency or 64, endpoint.batch_size or 1)
        self._batcher = MicroBatcher(self._generate_batch, capacity, size=lambda job: job.request.n)

    @cached_property
    def cache_identity(self) -> str:
        """``vllm:<model>:<hash of the resolved weights and dtype>``; computed on first use."""
        return weights_identity("vllm", self.model_name, self.endpoint.dtype or "auto", self.endpoint.thinking)

    def _load(self) -> None:
        with self._lock:
            if self.llm is not None:
                return
            vllm = import_vllm()
            path = resolve_weights(self.model_name)
            self.llm = vllm.LLM(
                model=path,
                tensor_parallel_size=self.endpoint.tensor_parallel_size or 1,
                gpu_memory_utilization=self.endpoint.gpu_memory_utilization or 0.85,
                dtype=self.endpoint.dtype or "auto",
                **engine_reasoning_kwargs(self.endpoint.reasoning_parser),
            )
            self.tokenizer = self.llm.get_tokenizer()
            warn_if_switch_ignored(self.name, self.tokenizer, self.endpoint.thinking, self._template_kwargs)
            self.context = int(self.llm.llm_engine.model_config.max_model_len)

    def max_context(self) -> int:
        self._load()
        return self.context

    def count_tokens(self, text: str) -> int:
        self._load()
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    async def check(self) -> None:
        # Built on the event-loop thread: older vLLM engines refuse (or fall
        # back to V0) when constructed off the main thread.
        try:
            self._load()
        except BackendError as exc:
            raise EndpointUnreachable(str(exc)) from exc

    async def context_length(self) -> Optional[int]:
        return self.max_context()

    async def complete(self, request: ChatRequest) -> list[Completion]:
        self._load()
        job = prepare_job(self.tokenizer, request, self._template_kwargs, self.context,
                          limit=f"{self.model_name} is served with max_model_len {self.context}")
        if job.opened and request.json_schema is not None and self.structured_output \
                and not self.endpoint.reasoning_parser and not self._warned_grammar:
            self._warned_grammar = True
            log.warning("%s: the chat template opens a reasoning block and no reasoning parser is set, so JSON "
                        "requests are constrained from the first reasoning token; set models.roles.<role>."
                        "reasoning_parser (qwen3 for Qwen3/Qwen3.5) or thinking=false for this role", self.name)
        return await self._batcher.submit(job)

    async def aclose(self) -> None:
        await self._batcher.aclose()

    def _sampling_params(self, job: Job):
        from vllm import SamplingParams

        s = job.request.sampling
        extra = {}
        if job.request.json_schema is not None and self.structured_output:
            extra = json_schema_params(job.request.json_schema)
        return SamplingParams(
            n=_engine_n(job.request),
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=job.max_new,
            seed=s.seed,
            **extra,
        )

    def _generate_batch(self, jobs: list[Job]) -> list[list[Completion]]:
        prompts = [{"prompt_token_ids": job.prompt_ids} for job in jobs]
        params = [self._sampling_params(job) for job in jobs]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [_completions(job, result) for job, result in zip(jobs, outputs, strict=True)]


def _completions(job: Job, result) -> list[Completion]:
    made = [
        Completion(
            text=with_reasoning(out.text, opened=job.opened),
            finish_reason=out.finish_reason or "stop",
            prompt_tokens=len(job.prompt_ids),
            completion_tokens=len(out.token_ids),
        )
        for out in result.outputs
    ]
    # A greedy request was decoded once; its n samples are copies of that one.
    return [replace(made[i % len(made)]) for i in range(job.request.n)]


def _engine_n(request: ChatRequest) -> int:
    """Samples asked of the engine: greedy samples are all equal, and older vLLM rejects n > 1 when greedy."""
    return 1 if request.sampling.temperature <= 0 else request.n

