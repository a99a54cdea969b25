"""Weight memory of a served checkpoint against the memory of the GPUs that serve it.

One table of known checkpoints and GPU types, read by ``stage=plan`` (``plan.roles.<role>.gpu_type``,
``checkpoint``, ...) and by the pre-flight of ``slurm/serve_node.sh``, which refuses to start vLLM when a
replica's GPUs cannot hold the weights:

    python -m autodata.hardware Qwen/Qwen3.5-397B-A17B --tp 8 [-- vllm serve args...]   # exit 1: does not fit

The pre-flight reads the GPUs' memory from ``nvidia-smi`` and says nothing (exit 0) without it. The weights come
from the ``*.safetensors`` files when MODEL is a local folder, else from the table (a checkpoint in neither is
not checked). GB are 10^9 bytes. The weights must fit in gpus x memory per GPU x utilization (vLLM's
``--gpu-memory-utilization``, 0.9 by default); what that leaves is the KV cache. Activations and CUDA graphs are
not counted, so a fit with little KV cache room may still fail to start: the check catches the hopeless cases.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

# Parameters in billions of the checkpoints the paper serves. Qwen3.5-4B: the released safetensors hold 4.66B
# (the vision tower and the multi-token-prediction head included, which vLLM loads too); the 397B: nominal, from
# the name. An MoE counts every expert, since all of them stay in GPU memory (A17B: 17B active of 397B).
CHECKPOINT_PARAMS_B: dict[str, float] = {
    "Qwen/Qwen3.5-4B": 4.66,
    "Qwen/Qwen3.5-397B-A17B": 397.0,
    "Qwen/Qwen3.5-397B-A17B-FP8": 397.0,
}
# Bytes per parameter of a weight dtype
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
# Memory of one GPU in GB, as sold, by the names plan.roles.<role>.gpu_type takes (nvidia-smi reports a little
# more: an H100's 80 GB are 81,559 MiB = 85.5 GB)
GPU_MEMORY_GB: dict[str, float] = {
    "A100-40GB": 40.0,
    "A100-80GB": 80.0,
    "H100-80GB": 80.0,
    "H200-141GB": 141.0,
    "B200-180GB": 180.0,
}
# Share of each GPU's memory a vLLM server takes (its --gpu-memory-utilization default)
DEFAULT_UTILIZATION = 0.9
# A checkpoint whose name ends so holds its weights in FP8
FP8_SUFFIX = "-fp8"


def _key(name: str) -> str:
    """A checkpoint's lookup key: its last path part, lower case (a hub id and a local copy match alike)."""
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


_CANONICAL = {_key(name): name for name in CHECKPOINT_PARAMS_B}


def known_params_b(checkpoint: str) -> Optional[float]:
    """Parameters in billions from the table; None for a checkpoint it does not list.

    >>> known_params_b("Qwen/Qwen3.5-397B-A17B-FP8"), known_params_b("/models/qwen3.5-4b/"), known_params_b("org/x")
    (397.0, 4.66, None)
    """
    name = _CANONICAL.get(_key(checkpoint))
    return CHECKPOINT_PARAMS_B[name] if name else None


def default_dtype(checkpoint: str) -> str:
    """fp8 for a checkpoint named ...-FP8, else bf16 (what the paper's checkpoints ship in).

    >>> default_dtype("Qwen/Qwen3.5-397B-A17B-FP8"), default_dtype("Qwen/Qwen3.5-397B-A17B")
    ('fp8', 'bf16')
    """
    return "fp8" if _key(checkpoint).endswith(FP8_SUFFIX) else "bf16"


def weights_gb(params_b: float, dtype: str) -> float:
    """Weight memory in GB: billions of parameters x bytes per parameter.

    >>> weights_gb(397, "bf16"), weights_gb(397, "fp8"), weights_gb(4, "bf16")
    (794.0, 397.0, 8.0)
    """
    return params_b * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class Fit:
    """Weights of one replica against the memory of the GPUs it is given.

    >>> Fit(794.0, gpus=8, gpu_memory_gb=80.0).usable_gb, Fit(794.0, gpus=8, gpu_memory_gb=80.0).fits
    (576.0, False)
    >>> round(Fit(794.0, gpus=8, gpu_memory_gb=141.0).kv_cache_gb, 1)
    221.2
    """

    weights_gb: float
    gpus: int
    gpu_memory_gb: float
    utilization: float = DEFAULT_UTILIZATION

    @property
    def usable_gb(self) -> float:
        return self.gpus * self.gpu_memory_gb * self.utilization

    @property
    def fits(self) -> bool:
        return self.weights_gb <= self.usable_gb

    @property
    def kv_cache_gb(self) -> float:
        """What the usable memory leaves for the KV cache (negative: the weights do not fit)."""
        return self.usable_gb - self.weights_gb


def fixes(checkpoint: str, dtype: str, fit: Fit, gpus_per_node: int) -> list[str]:
    """Ways to make a replica that does not fit fit, most direct first: more GPUs of its node (tensor parallel),
    the FP8 checkpoint, a node of larger GPUs, pipeline parallel over several nodes.

    >>> for fix in fixes("Qwen/Qwen3.5-397B-A17B", "bf16", Fit(794.0, gpus=8, gpu_memory_gb=80.0), gpus_per_node=8):
    ...     print(fix)
    serve Qwen/Qwen3.5-397B-A17B-FP8 (397 GB)
    give it an H200-141GB node (8x141 GB)
    2 nodes of 8 GPUs with pipeline parallel
    >>> fixes("Qwen/Qwen3.5-4B", "bf16", Fit(8.0, gpus=1, gpu_memory_gb=8.0), gpus_per_node=8)
    ['2 GPUs per replica (tensor parallel 2)']
    """
    out: list[str] = []
    per_gpu = fit.gpu_memory_gb * fit.utilization
    node = gpus_per_node * per_gpu
    # Tensor parallel degrees are powers of two (they must divide the attention heads)
    tp = 2 ** math.ceil(math.log2(max(1.0, fit.weights_gb / per_gpu)))
    if fit.gpus < tp <= gpus_per_node:
        out.append(f"{tp} GPUs per replica (tensor parallel {tp})")
    fp8 = _CANONICAL.get(_key(checkpoint) + FP8_SUFFIX)
    if dtype != "fp8" and fp8 is not None:
        fp8_gb = weights_gb(CHECKPOINT_PARAMS_B[fp8], "fp8")
        if fp8_gb <= fit.usable_gb:
            out.append(f"serve {fp8} ({fp8_gb:,.0f} GB)")
    if out and tp <= gpus_per_node:
        return out
    for name, memory in sorted(GPU_MEMORY_GB.items(), key=lambda item: item[1]):
        if memory > fit.gpu_memory_gb and fit.weights_gb <= gpus_per_node * memory * fit.utilization:
            article = "an" if name[0] in "AEFHILMNORSX" else "a"
            out.append(f"give it {article} {name} node ({gpus_per_node}x{memory:g} GB)")
            break
    nodes = math.ceil(fit.weights_gb / node)
    if nodes >= 2:
        out.append(f"{nodes} nodes of {gpus_per_node} GPUs with pipeline parallel")
    return out


def folder_weights_gb(folder: Path) -> Optional[float]:
    """The size of a local checkpoint's ``*.safetensors`` files in GB; None when it has none."""
    files = list(folder.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) / 1e9 if files else None


def gpu_memory_gb() -> list[float]:
    """Each GPU's memory in GB from nvidia-smi; empty without it (or when it fails)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        # MiB
        return [float(line) * 2**20 / 1e9 for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def preflight(model: str, tp: int, vllm_args: Sequence[str]) -> tuple[bool, str]:
    """(refuse?, what to say) for serving ``model`` on ``tp`` GPUs of this node; nothing to say when it cannot tell."""
    serve = argparse.ArgumentParser(add_help=False)
    serve.add_argument("--gpu-memory-utilization", type=float, default=DEFAULT_UTILIZATION)
    serve.add_argument("--quantization", default=None)
    args, _ = serve.parse_known_args(list(vllm_args))
    gpus = gpu_memory_gb()
    if not gpus:
        return False, ""
    folder = Path(model)
    if folder.is_dir() and folder_weights_gb(folder) is not None:
        need, what = folder_weights_gb(folder), "the *.safetensors files"
        dtype = default_dtype(model)
    else:
        params = known_params_b(model)
        if params is None:
            return False, (f"memory pre-flight: no size known for {model} (neither a local folder with *.safetensors "
                           "nor in autodata/hardware.py's CHECKPOINT_PARAMS_B); not checked")
        # vLLM's --quantization fp8 quantizes a bf16 checkpoint's weights as it loads them
        dtype = "fp8" if args.quantization == "fp8" else default_dtype(model)
        need, what = weights_gb(params, dtype), f"{params:g}B parameters in {dtype}"
    fit = Fit(need, gpus=tp, gpu_memory_gb=min(gpus), utilization=args.gpu_memory_utilization)
    given = f"TP={tp} GPU(s) of {fit.gpu_memory_gb:,.1f} GB x {fit.utilization:g} = {fit.usable_gb:,.0f} GB usable"
    if fit.fits:
        return False, (f"memory pre-flight: {model} needs about {need:,.0f} GB ({what}); {given}: fits, "
                       f"{fit.kv_cache_gb:,.0f} GB left for the KV cache")
    ways = fixes(model, dtype, fit, gpus_per_node=len(gpus))
    return True, (f"memory pre-flight: {model} needs about {need:,.0f} GB of weights ({what}), more than "
                  f"{given}; {', or '.join(ways) or 'serve a smaller or quantized checkpoint'}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autodata.hardware", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s MODEL [--tp N] [-- vllm serve args...]")
    parser.add_argument("model", help="hub id or local folder that vllm serve loads")
    parser.add_argument("--tp", type=int, default=1, help="GPUs per replica (tensor parallel)")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Split by hand: argparse would take the vllm arguments after -- as unrecognized once MODEL has been read
    vllm_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    refuse, message = preflight(args.model, args.tp, vllm_args)
    if message:
        print(message, file=sys.stderr if refuse else sys.stdout)
    return 1 if refuse else 0


if __name__ == "__main__":
    sys.exit(main())
