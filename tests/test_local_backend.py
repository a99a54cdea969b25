"""LocalBackend: batching, seeds, finish reasons, token counts and JSON-constrained decoding.

Fast tests pair a tiny random LlamaForCausalLM (2 layers, hidden 64) with the
embedded SmolLM2 tokenizer; ``slow`` tests load the real embedded model.

    python -m pytest tests/test_local_backend.py            # fast + slow
    python -m pytest tests/test_local_backend.py -m "not slow"
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging

import pytest
import torch

from autodata.backends.base import BackendError, ChatRequest, EndpointUnreachable, Sampling
from autodata.config import EndpointConfig

CONTEXT = 256


def endpoint(**overrides) -> EndpointConfig:
    values = dict(backend="local", model="tiny-random", device="cpu", dtype="float32", batch_size=8,
                  structured_output=True)
    values.update(overrides)
    return EndpointConfig(**values)


@pytest.fixture(scope="session")
def embedded_dir() -> str:
    from autodata.backends.embedded import resolve_model

    return resolve_model("embedded")


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_dir)


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def make_backend(model, tokenizer, **overrides):
    from autodata.backends.local import LocalBackend

    backend = LocalBackend(endpoint(**overrides))
    backend.attach(model, copy.deepcopy(tokenizer))
    return backend


@pytest.fixture(scope="session")
def tiny(tiny_model, tokenizer):
    return make_backend(tiny_model, tokenizer)


def chat(text: str, n: int = 1, **sampling) -> ChatRequest:
    sampling.setdefault("max_tokens", 8)
    return ChatRequest([{"role": "user", "content": text}], Sampling(**sampling), n=n)


def run_all(backend, *requests):
    async def main():
        return await asyncio.gather(*(backend.complete(r) for r in requests))

    return asyncio.run(main())


def count_generate_calls(monkeypatch, model) -> list[int]:
    """Record the batch size of every model.generate call."""
    calls: list[int] = []
    original = model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counting)
    return calls


def test_n_completions_per_request_in_order(tiny, tokenizer):
    requests = [chat("first", n=1, max_tokens=3), chat("second one", n=2, max_tokens=5),
                chat("the third prompt", n=3, max_tokens=7)]
    results = run_all(tiny, *requests)
    assert [len(r) for r in results] == [1, 2, 3]
    for request, completions in zip(requests, results, strict=True):
        text = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        prompt_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        for c in completions:
            # A random 49k-token model essentially never emits EOS, so each row uses its own budget.
            assert (c.finish_reason, c.completion_tokens) == ("length", request.sampling.max_tokens)
            assert c.prompt_tokens == prompt_tokens


def test_concurrent_requests_share_one_generate_call(tiny, monkeypatch):
    calls = count_generate_calls(monkeypatch, tiny.model)
    run_all(tiny, *(chat(f"prompt number {i}", max_tokens=4) for i in range(5)))
    assert calls == [5]


def test_batches_are_capped_at_batch_size_sequences(tiny, monkeypatch):
    calls = count_generate_calls(monkeypatch, tiny.model)
    # 4 requests x 3 samples = 12 rows with batch_size 8: two calls of two requests each.
    results = run_all(tiny, *(chat(f"p{i}", n=3, max_tokens=2) for i in range(4)))
    assert calls == [6, 6]
    assert [len(r) for r in results] == [3, 3, 3, 3]


def test_greedy_is_reproducible_and_samples_agree(tiny):
    request = chat("Tell me about sorting.", n=3, temperature=0.0, max_tokens=12)
    first, second = run_all(tiny, request, request)
    assert [c.text for c in first] == [c.text for c in second]
    assert len({c.text for c in first}) == 1


def test_seeded_sampling_does_not_depend_on_batch_neighbours(tiny):
    target = chat("What is a heap?", n=2, temperature=1.0, seed=123, max_tokens=10)
    (alone,) = run_all(tiny, target)
    batched = run_all(tiny, chat("a much longer neighbour prompt to force left padding " * 3, seed=9), target)[1]
    assert [c.text for c in alone] == [c.text for c in batched]
    # The two samples of one request draw from different streams.
    assert alone[0].text != alone[1].text
    (other_seed,) = run_all(tiny, chat("What is a heap?", n=2, temperature=1.0, seed=124, max_tokens=10))
    assert [c.text for c in other_seed] != [c.text for c in alone]


def test_finish_reason_stop_when_an_eos_token_is_generated(tiny_model, tokenizer):
    request = chat("Stop early please.", temperature=0.0, max_tokens=6)
    plain = make_backend(tiny_model, tokenizer)
    ((free,),) = run_all(plain, request)
    ids = hf_greedy_ids(plain, request)
    # The backend's greedy path picks the same tokens as transformers' own greedy decoding.
    assert (free.finish_reason, free.text) == ("length", tokenizer.decode(ids, skip_special_tokens=True))

    # Same weights, but the third greedy token is declared an EOS token.
    stop_at = ids.index(ids[2])
    model = copy.deepcopy(tiny_model)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, ids[2]]
    ((stopped,),) = run_all(make_backend(model, tokenizer), request)
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens == stop_at + 1
    assert stopped.text == tokenizer.decode(ids[:stop_at], skip_special_tokens=True)


def hf_greedy_ids(backend, request) -> list[int]:
    job = backend._prepare(request)
    ids = torch.tensor([job.prompt_ids])
    out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=job.max_new, pad_token_id=backend.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 12},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["answer", "score", "ok", "tags"],
    "additionalProperties": False,
}


def assert_matches_schema(value):
    assert set(value) == {"answer", "score", "ok", "tags"}
    assert isinstance(value["answer"], str) and len(value["answer"]) <= 12
    assert isinstance(value["score"], int) and not isinstance(value["score"], bool) and 0 <= value["score"] <= 10
    assert isinstance(value["ok"], bool)
    assert isinstance(value["tags"], list) and len(value["tags"]) <= 3
    assert set(value["tags"]) <= {"a", "b", "c"}


def test_random_weights_under_a_json_grammar_give_schema_valid_json(tiny):
    request = ChatRequest([{"role": "user", "content": "Answer in JSON."}],
                          Sampling(temperature=1.0, max_tokens=120, seed=7), n=4, json_schema=SCHEMA)
    plain = chat("Answer in JSON.", n=2, temperature=1.0, max_tokens=20, seed=7)
    constrained, free = run_all(tiny, request, plain)
    for c in constrained:
        assert c.finish_reason == "stop", c.text
        assert_matches_schema(json.loads(c.text))
    # The unconstrained neighbour in the same batch stays free text.
    for c in free:
        with pytest.raises(ValueError):
            json.loads(c.text)


def test_structured_output_off_or_uncompilable_schema_decodes_freely(tiny_model, tokenizer, caplog):
    request = ChatRequest([{"role": "user", "content": "JSON please"}],
                          Sampling(temperature=1.0, max_tokens=15, seed=1), json_schema=SCHEMA)
    off = make_backend(tiny_model, tokenizer, structured_output=False)
    (completion,) = asyncio.run(off.complete(request))
    assert completion.finish_reason == "length"

    broken = make_backend(tiny_model, tokenizer)
    broken._grammar_for(request)  # builds the grammar helper

    class Refuses:
        def compile_json_schema(self, *args, **kwargs):
            raise RuntimeError("unsupported keyword")

    broken._grammars._compiler = Refuses()
    broken._grammars._cache.clear()
    other = ChatRequest(request.messages, request.sampling, json_schema={"type": "object", "x-odd": 1})
    with caplog.at_level(logging.WARNING, logger="autodata.backends.hf_decoding"):
        run_all(broken, other, other)
        run_all(broken, ChatRequest(request.messages, request.sampling, json_schema={"type": "array"}))
    warnings = [r for r in caplog.records if "could not compile" in r.getMessage()]
    assert len(warnings) == 1


def test_prompt_longer_than_context_is_refused_with_advice(tiny):
    long_text = "word " * (CONTEXT + 10)
    assert tiny.count_tokens(long_text) > CONTEXT
    assert tiny.max_context() == CONTEXT
    # What the generate stage derives the document cap from
    assert asyncio.run(tiny.context_length()) == CONTEXT
    with pytest.raises(BackendError, match="count_tokens"):
        run_all(tiny, chat(long_text))


def test_completion_budget_shrinks_to_the_room_left_in_the_context(tiny):
    prompt = "word " * (CONTEXT - 40)
    (completions,) = run_all(tiny, chat(prompt, max_tokens=500))
    room = CONTEXT - completions[0].prompt_tokens
    assert 0 < room < 500
    assert (completions[0].finish_reason, completions[0].completion_tokens) == ("length", room)


def test_device_and_dtype_resolution():
    from autodata.backends.local import resolve_device, resolve_dtype

    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda:0") == "bfloat16"
    with pytest.raises(BackendError, match="float32"):
        resolve_dtype("int8", "cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(BackendError, match="device=auto"):
            resolve_device("cuda")


def test_missing_local_model_fails_check_with_the_path(tmp_path):
    from autodata.backends.local import LocalBackend

    backend = LocalBackend(endpoint(model=str(tmp_path / "no-such-model")))
    with pytest.raises(EndpointUnreachable, match="no-such-model"):
        asyncio.run(backend.check())


# ---- the real embedded model ---------------------------------------------------------


@pytest.fixture(scope="session")
def embedded():
    from autodata.backends.local import LocalBackend

    backend = LocalBackend(endpoint(model="embedded", device="auto", dtype="auto"))
    asyncio.run(backend.check())
    return backend


@pytest.mark.slow
def test_embedded_model_answers_json_and_plain_chat(embedded):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    json_request = ChatRequest([{"role": "user", "content": "What is the capital of France? Reply in JSON."}],
                               Sampling(temperature=0.0, max_tokens=64), json_schema=schema)
    plain_request = chat("Name one sorting algorithm.", temperature=0.0, max_tokens=48)
    (as_json,), (plain,) = run_all(embedded, json_request, plain_request)
    assert isinstance(json.loads(as_json.text)["answer"], str)
    assert plain.text.strip()
    assert embedded.cache_identity.startswith("local:embedded:")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_embedded_model_on_gpu_in_bfloat16():
    from autodata.backends.local import LocalBackend

    backend = LocalBackend(endpoint(model="embedded", device="cuda", dtype="auto"))
    (completions,) = run_all(backend, chat("Say hello.", n=2, temperature=0.7, seed=3, max_tokens=16))
    assert backend.model.dtype == torch.bfloat16
    assert len(completions) == 2 and all(c.text for c in completions)
