"""A tiny Qwen3.5 checkpoint and two GRPO steps on it: the policy path of ``stage=train`` on the paper's model family.

    python scripts/tiny_qwen35.py build /tmp/tiny_qwen35             # write the checkpoint folder only
    python scripts/tiny_qwen35.py grpo /tmp/tiny_grpo                # build it, two GRPO steps, reload final/
    python scripts/tiny_qwen35.py grpo /tmp/tiny_grpo --nproc 2      # the same under torchrun (DDP; gloo on CPU)
    python scripts/tiny_qwen35.py grpo /tmp/tiny_grpo --bf16 --vllm  # on a GPU: bf16, vLLM rollouts (colocate)

The checkpoint has the layout of the released Qwen3.5 checkpoints (``Qwen3_5ForConditionalGeneration``: a
vision tower beside the language model, ``model.language_model.*`` and ``model.visual.*`` weights, processor
files), randomly initialised at 2 layers of width 64, with the embedded SmolLM2 tokenizer, Qwen's vision
tokens added and a Qwen3.5-style chat template. The judge is a local HTTP server that grades by a rule the
test knows (criterion 1 is met when the answer has an even number of characters), so rewards differ within
a group and the steps move the weights. tests/test_qwen35_policy.py and scripts/gpu_check.sh both run this.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "tests" / "fixtures" / "train_run"
JUDGE_MODEL = "judge-model"
# Qwen's vision placeholders; the processor inserts them around image and video patches.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# Qwen3.5-style: thinking on unless enable_thinking=false, which closes an empty reasoning block up front.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}{{- '<think>\\n' }}{%- endif %}{%- endif %}"
)
# What the released checkpoints ship for the image and video processors, sized to the tiny vision tower.
PREPROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessorFast", "processor_class": "Qwen3VLProcessor",
    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "size": {"longest_edge": 65536, "shortest_edge": 4096},
}
VIDEO_PREPROCESSOR = {
    "video_processor_type": "Qwen3VLVideoProcessor", "processor_class": "Qwen3VLProcessor",
    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "size": {"longest_edge": 65536, "shortest_edge": 4096},
}
PROCESSOR_FILES = {"preprocessor_config.json": PREPROCESSOR, "video_preprocessor_config.json": VIDEO_PREPROCESSOR}


def build(folder: Path, seed: int = 0) -> Path:
    """Write a randomly initialised vision-language Qwen3.5 checkpoint (about 4M parameters) into ``folder``."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3_5Config, Qwen3_5ForConditionalGeneration

    from autodata.backends.embedded import resolve_model

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded"))
    tokenizer.add_special_tokens({"additional_special_tokens": list(VISION_TOKENS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    start, end, image, video = tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Like the released models, the embedding has more rows than the tokenizer has tokens.
    vocab = -(-len(tokenizer) // 64) * 64
    text = dict(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        # One Gated DeltaNet (linear attention) layer and one full attention layer, Qwen3.5's two kinds
        layer_types=["linear_attention", "full_attention"],
        num_attention_heads=2, num_key_value_heads=1, head_dim=64,
        linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=32, linear_value_head_dim=32,
        max_position_embeddings=4096, tie_word_embeddings=True,
        # Multimodal RoPE over 0.25 x 64 = 16 rotary dims: 8 frequencies split 4/2/2 over time, height, width
        rope_parameters={"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [4, 2, 2], "mrope_interleaved": True},
        bos_token_id=None, eos_token_id=end_of_turn, pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  patch_size=PREPROCESSOR["patch_size"], spatial_merge_size=PREPROCESSOR["merge_size"],
                  temporal_patch_size=PREPROCESSOR["temporal_patch_size"], num_position_embeddings=64)
    config = Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True, image_token_id=image,
                           video_token_id=video, vision_start_token_id=start, vision_end_token_id=end)
    config.architectures = ["Qwen3_5ForConditionalGeneration"]
    torch.manual_seed(seed)
    model = Qwen3_5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=[end_of_turn], pad_token_id=tokenizer.pad_token_id,
                                               do_sample=True, temperature=1.0, top_p=1.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name, content in PROCESSOR_FILES.items():
        (folder / name).write_text(json.dumps(content, indent=2) + "\n")
    return folder


class JudgeServer:
    """An OpenAI-compatible judge on 127.0.0.1: lists ``judge-model`` and grades each answer by a known rule.

    Criterion 1 is met when the answer has an even number of characters; the others are not met. Runs in a
    daemon thread; ``close()`` stops it.
    """

    def __init__(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.send({"object": "list", "data": [{"id": JUDGE_MODEL, "object": "model"}]})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with server.lock:
                    server.calls += 1
                answer = json.dumps(verdicts(request["messages"][-1]["content"]))
                choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                self.send({"id": "judge", "object": "chat.completion", "model": JUDGE_MODEL, "choices": [choice],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}})

        self.lock = threading.Lock()
        self.calls = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def verdicts(prompt: str) -> dict:
    """The judge's rule, from the prompt of the cs/legal judge template (its criteria count and fenced answer).

    >>> verdicts("For each criterion 1 to 3, decide ... <answer>\\nabcd\\n</answer>")
    {'verdicts': [{'id': 1, 'met': True}, {'id': 2, 'met': False}, {'id': 3, 'met': False}]}
    """
    n = int(re.search(r"For each criterion 1 to (\d+)", prompt).group(1))
    found = re.search(r"<answer>\n(.*?)\n</answer>", prompt, re.S)
    answer = found.group(1) if found else ""
    return {"verdicts": [{"id": i, "met": i == 1 and len(answer) % 2 == 0} for i in range(1, n + 1)]}


def train_command(model: Path, run_dir: Path, judge_url: str, nproc: int = 1, bf16: Optional[bool] = None,
                  extra: tuple[str, ...] = ()) -> list[str]:
    """``stage=train`` with experiment=smoke on ``model``, graded by the judge at ``judge_url``.

    Two steps of 2 prompts x 4 completions of at most 16 tokens; under torchrun the 8 completions of a step
    are split 4 per process. Thinking is off: 16 tokens of a random model never close a reasoning block, and an
    unclosed one has no answer to grade.
    """
    launcher = [sys.executable, "-m", "autodata.run"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                    "-m", "autodata.run"]
    overrides = [
        "stage=train", "experiment=smoke", "progress=false", f"hydra.run.dir={run_dir}",
        f"train.dataset={DATASET}", f"train.model={model}", f"train.per_device_batch_size={8 // nproc}",
        "train.max_completion_length=16", "train.learning_rate=1e-3", "cache.enabled=false",
        "models.roles.weak_solver.thinking=false",
        "models.roles.judge.backend=openai", f"models.roles.judge.model={JUDGE_MODEL}",
        f"models.roles.judge.base_url={judge_url}", "models.roles.judge.api_key_env=",
    ]
    if bf16 is not None:
        overrides.append(f"train.bf16={str(bf16).lower()}")
    return [*launcher, *overrides, *extra]


def run_training(model: Path, run_dir: Path, nproc: int = 1, bf16: Optional[bool] = None,
                 timeout_s: float = 600, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Serve the judge, run ``train_command`` from the repo root; the output (stdout and stderr) is returned."""
    judge = JudgeServer()
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    try:
        return subprocess.run(train_command(model, run_dir, judge.base_url, nproc, bf16, extra), cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
    finally:
        judge.close()


def reload_final(final: Path, device: str = "cpu") -> dict:
    """Load ``final/`` as stage=eval's local backend does (AutoModelForCausalLM + AutoTokenizer) and generate.

    Returns what was loaded: the model class, the chat prompt, the generated token ids, and the model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).to(device).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=False)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    return {"class": type(model).__name__, "prompt": prompt, "new_tokens": out[0, ids.shape[1]:].tolist(),
            "model": model}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the tiny checkpoint folder")
    b.add_argument("folder", type=Path)
    g = sub.add_parser("grpo", help="build the checkpoint, run two GRPO steps on it, reload final/")
    g.add_argument("folder", type=Path, help="work folder (emptied first): model/ and run/ go here")
    g.add_argument("--nproc", type=int, default=1, help="processes (torchrun when more than 1)")
    g.add_argument("--bf16", action="store_true", help="bf16 weights and compute (needs CUDA)")
    g.add_argument("--vllm", action="store_true", help="rollouts from vLLM colocated in the training processes")
    g.add_argument("--timeout", type=float, default=600, help="seconds the training run may take")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build(args.folder))
        return 0

    shutil.rmtree(args.folder, ignore_errors=True)
    model, run_dir = build(args.folder / "model"), args.folder / "run"
    extra = ("train.vllm.enabled=true", "train.vllm.max_model_length=1024") if args.vllm else ()
    done = run_training(model, run_dir, nproc=args.nproc, bf16=True if args.bf16 else None, timeout_s=args.timeout,
                        extra=extra)
    if done.returncode != 0:
        print(done.stdout[-6000:], file=sys.stderr)
        print(f"stage=train exited {done.returncode}; log above and in {run_dir}", file=sys.stderr)
        return 1
    import torch

    loaded = reload_final(run_dir / "final", "cuda" if torch.cuda.is_available() else "cpu")
    print(f"trained {model} -> {run_dir / 'final'}; reloaded as {loaded['class']}, generated {loaded['new_tokens']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
