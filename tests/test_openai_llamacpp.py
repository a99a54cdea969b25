"""OpenAIBackend against a real server: llama-cpp-python serving the embedded SmolLM2.

What this server does differently from vLLM, and what the backend does about it:
it ignores ``n`` (one choice per response; the backend sends one request per
sample) and refuses ``response_format`` type ``json_schema`` with an HTTP 500
(the backend falls back to its ``{"type": "json_object", "schema": ...}`` form,
which it does honour with a grammar).

    pytest -m slow tests/test_openai_llamacpp.py
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from autodata.backends.base import ChatRequest, Sampling
from autodata.backends.openai_backend import OpenAIBackend
from autodata.config import DEFAULT_ENDPOINT

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Name one primary color."}]


def make_backend(server) -> OpenAIBackend:
    endpoint = replace(
        DEFAULT_ENDPOINT,
        backend="openai",
        model=server.model,
        base_urls=[server.base_url],
        max_concurrency=2,
        max_retries=1,
        timeout_s=60.0,
    )
    return OpenAIBackend(endpoint, backoff_s=0.1)


def complete(server, request: ChatRequest):
    async def main():
        backend = make_backend(server)
        try:
            return await backend.complete(request)
        finally:
            await backend.aclose()

    return asyncio.run(main())


def test_plain_completion(llama_server):
    [out] = complete(llama_server, ChatRequest(QUESTION, Sampling(temperature=0.0, max_tokens=16, seed=1)))
    assert out.text.strip()
    assert out.finish_reason in ("stop", "length")
    assert out.prompt_tokens > 0 and 0 < out.completion_tokens <= 16


def test_n_samples_from_a_server_that_ignores_n(llama_server):
    out = complete(llama_server, ChatRequest(QUESTION, Sampling(temperature=1.0, max_tokens=8, seed=3), n=2))
    assert len(out) == 2 and all(c.completion_tokens > 0 for c in out)


def test_json_schema_output_parses(llama_server):
    # Enums keep the grammar-constrained answer short: a 135M model left free in a string
    # field rambles to max_tokens.
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "yellow", "blue"]}, "primary": {"type": "boolean"}},
        "required": ["color", "primary"],
    }
    messages = [{"role": "user", "content": "Give one primary color as a JSON object."}]
    sampling = Sampling(temperature=0.0, max_tokens=48, seed=5)
    [out] = complete(llama_server, ChatRequest(messages, sampling, json_schema=schema))
    value = json.loads(out.text)
    assert value["color"] in ("red", "yellow", "blue") and isinstance(value["primary"], bool)


def test_check_passes(llama_server):
    async def main():
        backend = make_backend(llama_server)
        try:
            await backend.check()
        finally:
            await backend.aclose()

    asyncio.run(main())
