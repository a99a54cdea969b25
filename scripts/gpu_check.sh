#!/usr/bin/env bash
# The first command on a new cluster node: can this install train and serve here?
#   bash scripts/gpu_check.sh            # every check: a few minutes on a GPU node, about a minute on a CPU
#   bash scripts/gpu_check.sh --quick    # packages and devices only (seconds)
#   bash scripts/gpu_check.sh --keep     # keep the work folder (the tiny model, its GRPO run dir and final/)
# One line per check: PASS, FAIL with what to fix, or SKIP with why. Exit 1 when any check failed.
# The checks: the packages of the GPU install import (versions shown); the GPUs torch sees; two GRPO steps of
# stage=train on a tiny Qwen3.5 (scripts/tiny_qwen35.py: the paper's policy layout; bf16 on CUDA, and DDP over
# two GPUs when there are two; fp32 on a CPU) whose final/ reloads the way stage=eval loads it; the local
# backend on CUDA with and without a JSON schema; with vLLM installed, its offline engine with structured
# output, GRPO with vLLM rollouts, and the GRPO run's final/ in vLLM. Without CUDA the GPU checks say SKIP.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

quick=0
keep=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --keep) keep=1 ;;
    *) echo "unknown option $arg (expected --quick or --keep)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
if [ "$keep" = 1 ]; then
  echo "work folder: $work"
else
  trap 'rm -rf "$work"' EXIT
fi
# Seconds one check may run (the GRPO check loads TRL and a model; vLLM compiles kernels the first time)
limit=${GPU_CHECK_TIMEOUT:-900}
failed=0

# report LINES: print verdict lines "STATUS<TAB>name<TAB>detail" aligned; count the FAILs
report() {
  local status name detail
  while IFS=$'\t' read -r status name detail; do
    printf '%-4s  %-34s  %s\n' "$status" "$name" "$detail"
    [ "$status" = FAIL ] && failed=$((failed + 1))
  done <<< "$1"
}

# check NAME FIX CODE [ARGS...]: run CODE with python (ARGS in sys.argv[1:]); it prints its own verdict lines,
# or exits 0 (PASS), 77 (SKIP) or anything else (FAIL: FIX, then the end of its output). Its last line is the detail.
check() {
  local name=$1 fix=$2 code=$3 out rc
  out=$(timeout "$limit" "$python" -c "$code" "${@:4}" 2>&1)
  rc=$?
  if grep -qE $'^(PASS|FAIL|SKIP)\t' <<< "$out"; then
    report "$(grep -E $'^(PASS|FAIL|SKIP)\t' <<< "$out")"
    if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
      report "$(printf 'FAIL\t%s\texited %s: %s' "$name" "$rc" "$(tail -n 3 <<< "$out" | tr '\n' ' ')")"
    fi
  elif [ "$rc" = 0 ]; then
    report "$(printf 'PASS\t%s\t%s' "$name" "$(tail -n 1 <<< "$out")")"
  elif [ "$rc" = 77 ]; then
    report "$(printf 'SKIP\t%s\t%s' "$name" "$(tail -n 1 <<< "$out")")"
  else
    [ "$rc" = 124 ] && fix="timed out after ${limit}s (GPU_CHECK_TIMEOUT); $fix"
    report "$(printf 'FAIL\t%s\t%s; output: %s' "$name" "$fix" "$(tail -n 5 <<< "$out" | tr '\n' ' ')")"
  fi
}

echo "autodata gpu check: $("$python" --version 2>&1) at $python, $(hostname)"

check "packages" "reinstall: bash scripts/setup.sh --gpu" '
import importlib, importlib.metadata as md, os
import torch
cuda = torch.cuda.is_available()
# The gpu extra (pyproject.toml) brings peft and DeepSpeed; vLLM serves rollouts (train.vllm.enabled) and backend=vllm
needed = ("torch", "transformers", "trl", "accelerate", "datasets")
gpu_extra = ("peft", "deepspeed", "vllm")
for name in needed + gpu_extra:
    try:
        version = md.version(name)
    except md.PackageNotFoundError:
        if name in needed:
            print(f"FAIL\timport {name}\tnot installed: bash scripts/setup.sh")
        elif name == "vllm" or not cuda:
            why = "no CUDA" if not cuda else "not installed"
            print(f"SKIP\timport {name}\t{why}; on a GPU node: pip install -e \".[gpu]\"")
        else:
            print(f"FAIL\timport {name}\tnot installed; the gpu extra needs it: pip install -e \".[gpu]\"")
        continue
    try:
        importlib.import_module(name)
    except Exception as err:
        line = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        print(f"FAIL\timport {name}\t{version} is installed but does not import ({line}); reinstall it")
        continue
    extra = ""
    if name == "torch":
        extra = f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU build)"
    print(f"PASS\timport {name}\t{version}{extra}")
'

check "cuda devices" "install the CUDA build of torch into .venv (see bash scripts/setup.sh --gpu)" '
import shutil, subprocess, sys
import torch
if not torch.cuda.is_available():
    smi = shutil.which("nvidia-smi")
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip() if smi else ""
    if listed:
        print(f"FAIL\tcuda devices\tnvidia-smi lists GPUs but torch {torch.__version__} sees none: install a CUDA "
              "build of torch that the driver supports into .venv (README, GPU install), then rerun")
    else:
        print(f"SKIP\tcuda devices\tno CUDA (torch {torch.__version__}, no nvidia-smi GPUs)")
    sys.exit(0)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    free, total = torch.cuda.mem_get_info(i)
    memory = f"{total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free)"
    print(f"PASS\tcuda:{i}\t{p.name}, {memory}, compute capability {p.major}.{p.minor}")
x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
torch.testing.assert_close((x @ x.T).float().diagonal(), (x.float() ** 2).sum(1), atol=1.0, rtol=0.05)
print(f"PASS\tcuda bf16 matmul\ttorch {torch.__version__}, CUDA {torch.version.cuda}")
'

cuda_gpus=$("$python" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' \
  2>/dev/null || echo 0)
if [ "$quick" = 1 ]; then
  report "$(printf 'SKIP\tGRPO on tiny Qwen3.5\t--quick')"
  report "$(printf 'SKIP\tlocal backend on CUDA\t--quick')"
  report "$(printf 'SKIP\tvLLM offline engine and rollouts\t--quick')"
else
  # Two GRPO steps of stage=train on the tiny Qwen3.5; final/ reloads as stage=eval loads it
  if [ "$cuda_gpus" -gt 0 ]; then
    grpo_name="GRPO on tiny Qwen3.5 (CUDA, bf16)"; grpo_flags=(--bf16)
  else
    grpo_name="GRPO on tiny Qwen3.5 (CPU, fp32)"; grpo_flags=()
  fi
  grpo_code='
import subprocess, sys
done = subprocess.run([sys.executable, "scripts/tiny_qwen35.py", "grpo", *sys.argv[1:]], capture_output=True, text=True)
print(done.stderr[-3000:] if done.returncode else done.stdout.strip().splitlines()[-1])
sys.exit(done.returncode)
'
  check "$grpo_name" "see the stage=train log above; rerun: $python scripts/tiny_qwen35.py grpo /tmp/tiny_grpo" \
    "$grpo_code" "$work/grpo" "${grpo_flags[@]}"
  if [ "$cuda_gpus" -ge 2 ]; then
    check "GRPO DDP on 2 GPUs (bf16)" "check NCCL (NCCL_DEBUG=INFO) and that both GPUs are free" \
      "$grpo_code" "$work/grpo_ddp" --bf16 --nproc 2
  else
    report "$(printf 'SKIP\tGRPO DDP on 2 GPUs\t%s CUDA GPU(s); tests/test_qwen35_policy.py runs DDP on CPU' \
      "$cuda_gpus")"
  fi

  if [ "$cuda_gpus" -gt 0 ]; then
    check "local backend on CUDA" "the local backend (autodata/backends/local.py) failed on the embedded model" '
import asyncio, json
from autodata.backends.base import ChatRequest, Sampling
from autodata.backends.local import LocalBackend
from autodata.config import DEFAULT_ENDPOINT
from dataclasses import replace
schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
async def main():
    backend = LocalBackend(replace(DEFAULT_ENDPOINT, backend="local", model="embedded", device="cuda"))
    await backend.check()
    ask = [{"role": "user", "content": "What is 2 + 2? Answer in JSON."}]
    (free,) = await backend.complete(ChatRequest(ask, Sampling(temperature=0, max_tokens=24)))
    request = ChatRequest(ask, Sampling(temperature=0, max_tokens=64), json_schema=schema)
    (constrained,) = await backend.complete(request)
    await backend.aclose()
    assert free.completion_tokens > 0, free
    assert isinstance(json.loads(constrained.text)["answer"], int), constrained.text
    detail = f"{backend.dtype}; free text {free.completion_tokens} tokens, JSON {constrained.text!r}"
    print(f"PASS\tlocal backend on CUDA\t{detail}")
asyncio.run(main())
'
  else
    report "$(printf 'SKIP\tlocal backend on CUDA\tno CUDA')"
  fi

  if [ "$cuda_gpus" -eq 0 ]; then
    report "$(printf 'SKIP\tvLLM offline engine\tno CUDA')"
  elif ! "$python" -c 'import vllm' >/dev/null 2>&1; then
    report "$(printf 'SKIP\tvLLM offline engine\tvllm not importable (see the import line above)')"
  else
    # One engine per process: each check frees its GPU memory on exit
    vllm_check='
import asyncio, json, sys
from dataclasses import replace
from autodata.backends.base import ChatRequest, Sampling
from autodata.backends.vllm_backend import VLLMBackend
from autodata.config import DEFAULT_ENDPOINT
# NAME MODEL MODE: MODE json also asks for a JSON answer under a schema (a random tiny model may never close one)
name, model, mode = sys.argv[1:4]
schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
async def main():
    backend = VLLMBackend(replace(DEFAULT_ENDPOINT, backend="vllm", model=model, gpu_memory_utilization=0.5))
    await backend.check()
    ask = [{"role": "user", "content": "What is 2 + 2? Answer in JSON."}]
    (free,) = await backend.complete(ChatRequest(ask, Sampling(temperature=0, max_tokens=16)))
    assert free.completion_tokens > 0, free
    detail = f"free text {free.completion_tokens} tokens"
    if mode == "json":
        request = ChatRequest(ask, Sampling(temperature=0, max_tokens=64), json_schema=schema)
        (constrained,) = await backend.complete(request)
        assert isinstance(json.loads(constrained.text)["answer"], int), constrained.text
        detail += f", JSON {constrained.text!r}"
    await backend.aclose()
    print(f"PASS\t{name}\tmax_model_len {backend.context}; {detail}")
asyncio.run(main())
'
    check "vLLM offline engine" "backend=vllm and train.vllm.enabled need it; vLLM's error follows" "$vllm_check" \
      "vLLM offline engine" embedded json
    check "GRPO with vLLM rollouts" "vLLM must load the policy folder and take its trained weights by name" \
      "$grpo_code" "$work/grpo_vllm" --bf16 --vllm
    if [ -f "$work/grpo/run/final/config.json" ]; then
      check "vLLM loads the GRPO final/" "final/ of a Qwen3.5 run must carry config, weights and processor files" \
        "$vllm_check" "vLLM loads the GRPO final/" "$work/grpo/run/final" text
    else
      report "$(printf 'SKIP\tvLLM loads the GRPO final/\tthe GRPO check wrote no final/')"
    fi
  fi
fi

if [ "$failed" -gt 0 ]; then
  echo "$failed check(s) failed"
  exit 1
fi
echo "no check failed"
