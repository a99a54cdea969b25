"""The smoke configuration end to end on CPU: two real GRPO steps of the embedded SmolLM2-135M, rewarded by the
embedded model as judge, a saved final model with tokenizer and model card, then a resume to a third step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata.config import RootConfig, register_configs, to_typed
from autodata.rundir import read_jsonl
from autodata.scoring import rubric_score
from autodata.validation import validate
from training.stage import train

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
register_configs()


def smoke_cfg(*overrides: str) -> RootConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = to_typed(compose(config_name="config", overrides=["stage=train", "experiment=smoke", "progress=false",
                                                                 f"train.dataset={ROOT / 'tests/fixtures/train_run'}",
                                                                 *overrides]))
    validate(cfg)
    return cfg


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    weights: dict = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    return weights


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train_smoke") / "run"
    summary = train(smoke_cfg(), run_dir)
    return run_dir, summary


def test_two_steps_train_the_policy_on_judge_rewards(smoke_run):
    from autodata.backends.embedded import resolve_model

    run_dir, summary = smoke_run
    assert summary["global_step"] == 2
    metrics = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "train/reward" in r]
    assert [m["step"] for m in metrics] == [1, 2]
    for name in ("train/rewards/rubric_judge/mean", "train/rewards/rubric_judge/std", "train/frac_reward_zero_std",
                 "train/truncation_rate", "train/judge/latency_mean_s", "train/judge/failures",
                 "train/judge/injection_flags", "train/completions/clipped_ratio"):
        assert name in metrics[0], name

    # Rewards came from the judge: every graded reward is the rubric score of the verdicts the judge returned,
    # and the judge was called for them.
    rows = list(read_jsonl(run_dir / "rewards.jsonl"))
    assert len(rows) == 2 * 8
    graded = [r for r in rows if r["status"] == "graded"]
    assert graded, rows
    weights = {row["id"]: [c["weight"] for c in row["rubric"]]
               for row in read_jsonl(ROOT / "tests/fixtures/train_run/train.jsonl")}
    for r in graded:
        assert r["reward"] == pytest.approx(rubric_score(weights[r["example_id"]], r["met"]))
    usage = summary["judge_usage"]
    assert usage["calls"] + usage["cached_calls"] >= len(graded)
    assert summary["judge_totals"]["completions"] == 16

    # Parameters changed: the saved model differs from the embedded base model.
    final = run_dir / "final"
    base, trained = load_weights(Path(resolve_model("embedded"))), load_weights(final)
    assert base.keys() == trained.keys()
    changed = [k for k in base if not (base[k] == trained[k]).all()]
    spread = [m["train/frac_reward_zero_std"] for m in metrics]
    assert changed, f"no parameter moved; frac_reward_zero_std per step: {spread}"


def test_the_final_model_is_saved_with_tokenizer_and_model_card(smoke_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, summary = smoke_run
    final = run_dir / "final"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "train_summary.json",
                 "autodata_config.yaml"):
        assert (final / name).exists(), name
    card = (final / "README.md").read_text()
    assert "tests/fixtures/train_run" in card and "6 training examples" in card
    assert "2 prompts x 4 completions = 8 completions per optimizer step" in card
    assert "`train/frac_reward_zero_std`" in card and "`train/judge/latency_mean_s`" in card
    assert "max_completion_length: 48" in (final / "autodata_config.yaml").read_text()
    assert json.loads((final / "train_summary.json").read_text())["global_step"] == 2
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.vocab_size >= len(tokenizer) - 1
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()


def test_the_trained_model_is_evaluated_from_its_run_dir(smoke_run, tmp_path):
    """stage=eval takes a train run's final/ as the evaluated model (local backend), graded by the judge."""
    import asyncio

    from eval.stage import evaluate

    run_dir, _ = smoke_run
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = to_typed(compose(config_name="config", overrides=[
            "stage=eval", "progress=false", f"eval.model={run_dir / 'final'}",
            f"eval.datasets=[{ROOT / 'tests/fixtures/train_run'}]", "eval.limit=1", "eval.n=2", "eval.max_tokens=24",
            "models.roles.judge.max_tokens=160"]))
    validate(cfg)
    result = asyncio.run(evaluate(cfg, tmp_path / "eval"))
    assert result["model"] == str(run_dir / "final")
    d = result["datasets"]["train_run"]
    assert d["prompts"] == 1 and d["samples"] == 2
    samples = list(read_jsonl(tmp_path / "eval" / "samples.jsonl"))
    assert all(s["completion_tokens"] <= 24 and s["grades"]["judge"] for s in samples)


def test_lora_on_a_tiny_model_with_a_scripted_judge(tmp_path):
    """A 2-layer model built from a config, LoRA adapters, a judge whose grade is known for each answer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from autodata.backends.embedded import resolve_model
    from autodata.config import ModelsConfig
    from autodata.llm import LLM
    from tests.scripted import ScriptedBackend, last_user

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id))
    lengths: dict[str, int] = {}

    def judge(role, request, call):
        # Criterion 1 is met when the answer has an even number of characters: a grade only the judge knows.
        answer = last_user(request).split("<answer>\n", 1)[1].split("\n</answer>", 1)[0]
        lengths[answer] = len(answer)
        met = [len(answer) % 2 == 0, False, False, False]
        return json.dumps({"verdicts": [{"id": i, "met": m} for i, m in enumerate(met, start=1)]})

    backend = ScriptedBackend("judge", judge)
    llm = LLM(ModelsConfig(), backends={"judge": backend})
    cfg = smoke_cfg("train.lora.enabled=true", "train.lora.r=4", "train.max_steps=1", "train.max_completion_length=16",
                    "train.learning_rate=1e-3")
    summary = train(cfg, tmp_path / "run", llm=llm, model=model, tokenizer=tokenizer)

    rows = list(read_jsonl(tmp_path / "run" / "rewards.jsonl"))
    graded = [r for r in rows if r["status"] == "graded"]
    assert len(backend.requests) == len(graded) > 0
    for r in graded:
        assert r["reward"] == (0.5 if r["met"][0] else 0.0)  # weight 5 of 10 positive
    final = tmp_path / "run" / "final"
    assert (final / "adapter_config.json").exists() and (final / "adapter_model.safetensors").exists()
    assert not (final / "model.safetensors").exists()
    # LoRA's B matrices start at zero: any nonzero one was moved by the judge's rewards.
    lora_b = {k: v for k, v in load_weights(final).items() if "lora_B" in k}
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b.values())
    assert "library_name: peft" in (final / "README.md").read_text()
    assert summary["global_step"] == 1


def test_resume_continues_from_the_latest_checkpoint(smoke_run):
    run_dir, _ = smoke_run
    summary = train(smoke_cfg("train.resume=true", "train.max_steps=3"), run_dir)
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert summary["global_step"] == 3
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train/reward" in r]
    assert steps == [1, 2, 3]
    assert (run_dir / "checkpoints" / "checkpoint-3").is_dir()
    # The judge grades only step 3's completions this time.
    assert summary["judge_totals"]["completions"] == 8


class FailingJudgeServer:
    """A real HTTP server that lists its model (GET /v1/models passes the start-up check) and then answers every
    chat request with 503: a judge that goes down once training has started."""

    def __init__(self):
        import asyncio
        import socket
        import threading

        from aiohttp import web

        async def models(request):
            return web.json_response({"object": "list", "data": [{"id": "judge-model", "object": "model"}]})

        async def chat(request):
            self.chat_calls += 1
            return web.json_response({"error": {"message": "judge overloaded"}}, status=503)

        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.chat_calls = 0
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self):
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_judge_that_goes_down_stops_training_with_a_resume_hint(tmp_path):
    from training.stage import TrainAborted

    server = FailingJudgeServer()
    try:
        cfg = smoke_cfg("models.roles.judge.backend=openai", "models.roles.judge.model=judge-model",
                        f"models.roles.judge.base_url=http://127.0.0.1:{server.port}/v1",
                        "models.roles.judge.api_key_env=", "models.roles.judge.max_retries=0",
                        "train.judge_down_batches=1", "train.max_steps=1")
        with pytest.raises(TrainAborted, match=r"stopped at step 0: the judge failed all (\d+) calls .*503.*"
                                               r"train.resume=true") as info:
            train(cfg, tmp_path / "run")
    finally:
        server.close()
    # Every completion sent to the judge (all 8 but any the injection guard or an empty answer kept back) was
    # refused once (no retries); nothing was saved as final.
    import re

    sent = int(re.search(r"failed all (\d+) calls", str(info.value)).group(1))
    assert 1 <= sent <= 8 and server.chat_calls == sent
    assert not (tmp_path / "run" / "final").exists()
