"""One thinking switch per role, and the rule that a reasoning cut off by the token budget has no answer.

The chat templates are the released ones of Qwen3.5, Qwen3 (hybrid), Qwen3-Thinking-2507 and Llama 3
(tests/fixtures/chat_templates), rendered by a real tokenizer (the embedded SmolLM2's, with each template set).
The backends run for real: the local backend on a tiny random model, the OpenAI backend against a local HTTP server.
"""

from __future__ import annotations

import asyncio
import copy
import doctest
import json
from pathlib import Path

import pytest
import torch

from autodata import reasoning
from autodata.backends.base import ChatRequest, Sampling
from autodata.config import DomainConfig, EndpointConfig, ModelsConfig
from autodata.domains import build_domain
from autodata.guard import final_answer
from autodata.llm import LLM
from autodata.reasoning import prompt_opens_reasoning, template_kwargs, template_opens_reasoning, with_reasoning
from tests.scripted import ScriptedBackend
from tests.test_openai_backend import Reply, one_call
from tests.test_train_reward import TASK

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
MESSAGES = [{"role": "user", "content": "What does `0 or [] or 'x' and 5` evaluate to?"}]


def template(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text()


@pytest.fixture(scope="module")
def base_tokenizer():
    from transformers import AutoTokenizer

    from autodata.backends.embedded import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("embedded"))


def with_template(tokenizer, name: str):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template(name)
    return tok


def test_module_doctests():
    assert doctest.testmod(reasoning).failed == 0


# Which prompts open the reasoning block: (template, thinking switch) -> opened
OPENS = [
    ("qwen3_5", None, True),  # Qwen3.5 thinks by default, opening <think> inside the prompt
    ("qwen3_5", True, True),
    ("qwen3_5", False, False),  # a closed empty block: the model answers at once
    ("qwen3", None, False),  # hybrid Qwen3 leaves the opening tag to the model
    ("qwen3", True, False),
    ("qwen3", False, False),
    ("qwen3_thinking_2507", None, True),
    ("qwen3_thinking_2507", False, True),  # no switch: it always opens
    ("llama3", None, False),
    ("llama3", True, False),
]


@pytest.mark.parametrize("name,thinking,opened", OPENS)
def test_which_real_templates_open_the_reasoning_block(base_tokenizer, name, thinking, opened):
    tok = with_template(base_tokenizer, name)
    assert template_opens_reasoning(tok, template_kwargs(thinking)) is opened


@pytest.mark.parametrize("name,ignored", [("qwen3_5", False), ("qwen3", False), ("qwen3_thinking_2507", True),
                                          ("llama3", True)])
def test_templates_without_the_switch_are_told_apart(base_tokenizer, name, ignored):
    assert reasoning.template_ignores_switch(with_template(base_tokenizer, name)) is ignored


def test_qwen3_5_generation_prompts_are_the_released_ones(base_tokenizer):
    tok = with_template(base_tokenizer, "qwen3_5")
    on = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True, **template_kwargs(True))
    off = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True, **template_kwargs(False))
    assert on.endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


# A completion as each serving path returns it -> the answer graded
@pytest.mark.parametrize("text,kwargs,answer", [
    # Qwen3.5, in-process backends: the prompt opened the block
    ("The operands... so 5.\n</think>\n\n5", {"opened": True}, "5"),
    ("The operands are evaluated left to right, and then", {"opened": True}, ""),
    # Qwen3.5 behind a server without a reasoning parser: the closing tag alone tells
    ("The operands... so 5.\n</think>\n\n5", {}, "5"),
    ("The operands are evaluated left to right, and then", {"thinking": True, "finish_reason": "length"}, ""),
    # a server with a reasoning parser: reasoning apart, the answer in content
    ("5", {"reasoning": "The operands... so 5."}, "5"),
    ("", {"reasoning": "The operands are evaluated left to", "finish_reason": "length"}, ""),
    # hybrid Qwen3: the model opens the block itself
    ("<think>\nThe operands are evaluated left to", {"thinking": True, "finish_reason": "length"}, ""),
    ("<think>\nso 5\n</think>\n\n5", {"thinking": True, "finish_reason": "stop"}, "5"),
    # no reasoning at all (Llama 3, thinking off): a cut-off answer is still an answer, as before
    ("5, because `and` binds tighter", {"finish_reason": "length"}, "5, because `and` binds tighter"),
    ("5, because `and` binds tighter", {"thinking": False, "finish_reason": "length"},
     "5, because `and` binds tighter"),
])
def test_the_answer_is_what_follows_a_closed_reasoning_block(text, kwargs, answer):
    assert final_answer(with_reasoning(text, **kwargs)) == answer


# ---- the local backend: real template, real decoding ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(base_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(base_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=base_tokenizer.bos_token_id,
                         eos_token_id=base_tokenizer.eos_token_id, pad_token_id=base_tokenizer.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def local_backend(model, tokenizer, thinking):
    from autodata.backends.local import LocalBackend

    backend = LocalBackend(EndpointConfig(backend="local", model="tiny-qwen35-template", device="cpu",
                                          dtype="float32", batch_size=4, structured_output=True, thinking=thinking))
    backend.attach(model, tokenizer)
    return backend


def complete(backend, request):
    return asyncio.run(backend.complete(request))


@pytest.mark.parametrize("thinking,opened", [(True, True), (None, True), (False, False)])
def test_local_backend_marks_a_cut_off_reasoning_as_no_answer(base_tokenizer, tiny_model, thinking, opened):
    backend = local_backend(tiny_model, with_template(base_tokenizer, "qwen3_5"), thinking)
    # A random model never closes its reasoning: every sample runs out of tokens
    out = complete(backend, ChatRequest(MESSAGES, Sampling(temperature=1.0, max_tokens=6, seed=1), n=2))
    assert [c.finish_reason for c in out] == ["length", "length"]
    for c in out:
        assert c.text.startswith("<think>\n") is opened
        assert (final_answer(c.text) == "") is opened
    # The switch is part of the cache identity: the two modes never share cached answers
    assert backend.cache_identity.endswith(reasoning.thinking_suffix(thinking))


def test_local_json_grammar_waits_for_the_reasoning_to_close(base_tokenizer, tiny_model):
    """With the block opened by the prompt, the row reasons freely; the grammar applies from </think> on."""
    from autodata.backends.hf_decoding import GrammarMask, JsonGrammars

    tok = with_template(base_tokenizer, "qwen3_5")
    grammar = JsonGrammars(tok, len(tok), [tok.eos_token_id]).compile(
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    assert grammar is not None
    close = reasoning.reasoning_close_ids(tok)
    width, vocab = 3, len(tok)
    mask = GrammarMask([grammar, grammar], width, [40, 40], vocab, gates=[close, None])
    prompt = [[1, 2, 3], [1, 2, 3]]
    scores = mask(torch.tensor(prompt), torch.zeros(2, vocab))
    # Row 0 is reasoning: nothing masked; row 1 (no gate) must start its JSON object now
    assert torch.isfinite(scores[0]).all()
    assert torch.isfinite(scores[1]).sum() < vocab
    brace = tok.encode("{", add_special_tokens=False)
    assert torch.isfinite(scores[1, brace[0]])
    # Row 0 writes some reasoning, then </think>: from the next token its grammar applies
    reasoning_ids = tok.encode("n is 4", add_special_tokens=False)
    row0 = prompt[0] + reasoning_ids + close
    row1 = prompt[1] + brace + [tok.encode('"', add_special_tokens=False)[0]] * (len(row0) - width - 1)
    for step in range(width + 1, len(row0) + 1):
        ids = torch.tensor([row0[:step], row1[:step]])
        scores = mask(ids, torch.zeros(2, vocab))
        if step < len(row0):
            assert torch.isfinite(scores[0]).all(), "masked before the reasoning closed"
    assert torch.isfinite(scores[0]).sum() < vocab
    assert torch.isfinite(scores[0, brace[0]])


# ---- the OpenAI backend: what a server sends back --------------------------------------------------------------


def reply(message: dict, finish: str) -> Reply:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    return Reply(body={"id": "x", "object": "chat.completion", "model": "test-model", "choices": [choice],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}})


@pytest.mark.parametrize("message,finish,answer", [
    # vLLM --reasoning-parser qwen3 (older vLLM names the field reasoning_content, newer reasoning)
    ({"content": "5", "reasoning_content": "and binds tighter"}, "stop", "5"),
    ({"content": "5", "reasoning": "and binds tighter"}, "stop", "5"),
    ({"content": None, "reasoning": "and binds tighter than or, so"}, "length", ""),
    # no parser: the raw text after the prompt's <think>
    ({"content": "and binds tighter\n</think>\n\n5"}, "stop", "5"),
    ({"content": "and binds tighter than or, so"}, "length", ""),
])
def test_openai_backend_sends_the_switch_and_reads_every_reasoning_form(message, finish, answer):
    server, out = one_call(script=[reply(message, finish)], thinking=True)
    assert not isinstance(out, Exception), out
    assert final_answer(out[0].text) == answer
    assert out[0].finish_reason == finish
    assert server.requests[0]["chat_template_kwargs"] == {"enable_thinking": True}


def test_openai_backend_without_the_switch_sends_no_template_arguments():
    server, out = one_call(script=[reply({"content": "5, because and binds tighter"}, "length")])
    assert "chat_template_kwargs" not in server.requests[0]
    # Thinking unknown and no tag: the text is the answer, as it always was
    assert final_answer(out[0].text) == "5, because and binds tighter"


# ---- grading: the reward, eval and the generate loop agree ------------------------------------------------------


def judge_llm(calls: list):
    def verdicts(role, request, call):
        calls.append(request)
        return json.dumps({"verdicts": [{"id": i, "met": True} for i in range(1, len(TASK.rubric) + 1)]})

    return LLM(ModelsConfig(), backends={"judge": ScriptedBackend("judge", verdicts)})


def test_grpo_reward_of_a_prompt_opened_reasoning_cut_off_is_zero_without_a_judge_call():
    from training.reward import JudgeReward

    calls: list = []
    reward = JudgeReward(build_domain(DomainConfig(name="cs")), judge_llm(calls))
    reward.prompt_opens_reasoning = True
    # What TRL decodes after Qwen3.5's prompt: no opening tag; the second never closed its reasoning
    result = asyncio.run(reward.score([TASK] * 2, ["weighing both...\n</think>\n\nIt evaluates to 5.",
                                                   "weighing both operands, the first is falsy so"]))
    assert result.rewards[1] == 0.0 and result.outcomes[1].status == "empty"
    assert len(calls) == 1 and "It evaluates to 5." in calls[0].messages[-1]["content"]
    assert "weighing both" not in calls[0].messages[-1]["content"]


def test_train_stage_reads_the_switch_from_the_weak_solver(tmp_path):
    from autodata.config import RootConfig
    from training.stage import policy_template_kwargs

    cfg = RootConfig(stage="train")
    assert policy_template_kwargs(cfg) is None
    cfg.models.roles["weak_solver"].thinking = False
    cfg.train.chat_template_kwargs = {"add_vision_id": False}
    assert policy_template_kwargs(cfg) == {"add_vision_id": False, "enable_thinking": False}


# ---- one switch: the paper experiments set it once, a second one is refused --------------------------------------


def test_paper_experiments_set_the_solvers_thinking_once():
    from autodata.config import endpoint_for
    from tests.test_config import compose_typed

    for name in ("paper_cs", "paper_legal", "paper_science"):
        cfg = compose_typed(["stage=generate", f"experiment={name}"])
        assert endpoint_for(cfg.models, "weak_solver").thinking is True
        assert endpoint_for(cfg.models, "strong_solver").thinking is True
        # The API-served roles keep their server's default: no template argument is sent to them
        assert endpoint_for(cfg.models, "judge").thinking is None


def test_a_second_thinking_switch_is_refused_with_the_fix():
    from autodata.validation import ConfigError, validate
    from tests.test_config import compose_typed

    generate = compose_typed(["stage=generate"])
    generate.models.roles["weak_solver"].extra_body = {"chat_template_kwargs": {"enable_thinking": False}}
    train = compose_typed(["stage=train", "train.dataset=tests/fixtures/train_run"])
    train.train.chat_template_kwargs = {"enable_thinking": True}
    for cfg, key in [(generate, "models.roles.weak_solver.extra_body.chat_template_kwargs.enable_thinking"),
                     (train, "train.chat_template_kwargs.enable_thinking")]:
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        text = str(info.value)
        assert key in text and "thinking" in text.split(key, 1)[1]
