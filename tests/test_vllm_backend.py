"""VLLMBackend without vLLM: the missing-package message, and the request plumbing against a stub engine.

The stub mirrors the vLLM API surface the backend touches (``LLM``,
``SamplingParams``, ``sampling_params.StructuredOutputsParams``, outputs with
``text``/``token_ids``/``finish_reason``); a real engine run needs a GPU node.
"""

from __future__ import annotations

import asyncio
import sys
import types
from dataclasses import dataclass, field

import pytest

from autodata.backends.base import BackendError, ChatRequest, EndpointUnreachable, Sampling
from autodata.config import EndpointConfig


def test_missing_vllm_names_the_install_command():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here; the missing-package error cannot occur")
    from autodata.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(EndpointConfig(backend="vllm", model="Qwen/Qwen3-0.6B"))
    with pytest.raises(EndpointUnreachable, match=r"pip install 'autodata\[gpu\]'"):
        asyncio.run(backend.check())


@dataclass
class StructuredOutputsParams:
    json: object = None


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: object = None
    structured_outputs: object = None


class Tokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt, **kwargs):
        return " ".join(m["content"] for m in messages) + " <assistant>"

    def encode(self, text, add_special_tokens=False):
        return list(range(len(text.split())))


@dataclass
class StubLLM:
    kwargs: dict
    calls: list = field(default_factory=list)

    def get_tokenizer(self):
        return Tokenizer()

    @property
    def llm_engine(self):
        return types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=32))

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        return [
            types.SimpleNamespace(outputs=[
                types.SimpleNamespace(text=f"p{len(p['prompt_token_ids'])}s{i}", token_ids=[1] * sp.max_tokens,
                                      finish_reason="length")
                for i in range(sp.n)
            ])
            for p, sp in zip(prompts, params, strict=True)
        ]


@pytest.fixture
def stub_vllm(monkeypatch):
    engines: list[StubLLM] = []
    vllm = types.ModuleType("vllm")
    vllm.LLM = lambda **kwargs: engines.append(StubLLM(kwargs)) or engines[-1]
    vllm.SamplingParams = SamplingParams
    sampling_params = types.ModuleType("vllm.sampling_params")
    sampling_params.StructuredOutputsParams = StructuredOutputsParams
    vllm.sampling_params = sampling_params
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling_params)
    return engines


def test_concurrent_requests_become_one_engine_call(stub_vllm):
    from autodata.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(EndpointConfig(backend="vllm", model="m", tensor_parallel_size=2,
                                         gpu_memory_utilization=0.5, dtype="bfloat16", structured_output=True))
    schema = {"type": "object"}
    requests = [
        ChatRequest([{"role": "user", "content": "a b c"}], Sampling(temperature=0.7, max_tokens=5, seed=1), n=2),
        ChatRequest([{"role": "user", "content": "a"}], Sampling(temperature=0.0, max_tokens=100), n=3,
                    json_schema=schema),
    ]

    async def main():
        await backend.check()
        return await asyncio.gather(*(backend.complete(r) for r in requests))

    first, second = asyncio.run(main())
    (engine,) = stub_vllm
    assert engine.kwargs == {"model": "m", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5,
                             "dtype": "bfloat16"}
    (prompts, params), = engine.calls
    assert [p["prompt_token_ids"] for p in prompts] == [[0, 1, 2, 3], [0, 1]]
    assert (params[0].n, params[0].temperature, params[0].seed, params[0].structured_outputs) == (2, 0.7, 1, None)
    # Greedy: one engine sample, copied n times; max_tokens shrinks to the room left in max_model_len.
    assert (params[1].n, params[1].max_tokens, params[1].structured_outputs.json) == (1, 30, schema)
    assert [c.text for c in first] == ["p4s0", "p4s1"]
    assert [c.text for c in second] == ["p2s0"] * 3 and second[0] is not second[1]
    assert (second[0].prompt_tokens, second[0].completion_tokens, second[0].finish_reason) == (2, 30, "length")


def test_prompt_over_max_model_len_is_refused(stub_vllm):
    from autodata.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(EndpointConfig(backend="vllm", model="m"))
    request = ChatRequest([{"role": "user", "content": "w " * 40}])
    with pytest.raises(BackendError, match="max_model_len 32"):
        asyncio.run(backend.complete(request))
    # The engine's max_model_len is what the generate stage derives the document cap from
    assert asyncio.run(backend.context_length()) == 32
