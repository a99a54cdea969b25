"""Eval throughput: prompts per second of ``stage=eval`` against fake servers, beside the latency bound.

The evaluated model and the judge are fake OpenAI-compatible servers (benchmarks/fake_openai_server.py,
each in its own process) that answer after a fixed latency; the judge answers with a valid verdict for the
set's 10-criterion rubrics. The run goes through the real path: ``eval.stage.evaluate`` -> ``LLM`` ->
``OpenAIBackend`` over HTTP, with the SQLite response cache, samples/ledger files and metrics.

One prompt costs one solver request (``eval.n`` samples in it) and then ``eval.n`` concurrent judge calls,
so with ``eval.max_prompts_in_flight`` = F the bound is F / (solver latency + judge latency) prompts/s
(and no more than the endpoints' ``max_concurrency`` allows).

    python benchmarks/bench_eval_throughput.py                       # 512 prompts, n=3, F in 16/256/512
    python benchmarks/bench_eval_throughput.py --prompts 1024 --in-flight 1024 --solver-latency 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_reward import CRITERIA, judge_server  # noqa: E402
from fake_openai_server import MODEL, serve_in_subprocess  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from autodata.config import register_configs, to_typed  # noqa: E402
from eval.stage import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_set(path: Path, prompts: int) -> None:
    rubric = [{"criterion": f"States consequence {i} of the rule", "weight": 5 if i < 8 else -3,
               "category": "reasoning"} for i in range(CRITERIA)]
    with path.open("w") as fh:
        for p in range(prompts):
            fh.write(json.dumps({"id": f"q{p}", "question": f"Question {p}: what does the rule imply here?",
                                 "context": "", "reference_answer": "It implies the consequence.",
                                 "rubric": rubric}) + "\n")


def run_once(solver_url: str, judge_url: str, data: Path, run_dir: Path, n: int, in_flight: int,
             concurrency: int) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds of one eval run."""
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = to_typed(compose(config_name="config", overrides=[
            "stage=eval", "models=openai", f"models.base_url={solver_url}", f"models.model={MODEL}",
            f"models.roles.judge.base_url={judge_url}", f"models.default.max_concurrency={concurrency}",
            "models.default.max_retries=0", f"eval.datasets=[{data}]", f"eval.n={n}",
            f"eval.max_prompts_in_flight={in_flight}", "progress=false"]))
    started, cpu_started = time.perf_counter(), time.process_time()
    result = asyncio.run(evaluate(cfg, run_dir))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    metrics = result["datasets"][data.stem]
    assert metrics["samples"] == metrics["prompts"] * n and metrics["judge_failures"] == 0, metrics
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[16, 256, 512])
    parser.add_argument("--solver-latency", type=float, default=1.0)
    parser.add_argument("--judge-latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=2048, help="max_concurrency of each endpoint")
    args = parser.parse_args()

    per_prompt = args.solver_latency + args.judge_latency
    with tempfile.TemporaryDirectory() as tmp, serve_in_subprocess(args.solver_latency) as solver_url, \
            judge_server(args.judge_latency) as judge_url:
        data = Path(tmp) / "bench_set.jsonl"
        write_set(data, args.prompts)
        print(f"{args.prompts} prompts, n={args.n}: solver {args.solver_latency} s + judge {args.judge_latency} s "
              f"per prompt; {os.cpu_count()} CPUs")
        calls = args.prompts * (1 + args.n)
        print(f"{'in flight':>9} | {'seconds':>8} | {'prompts/s':>9} | {'bound/s':>8} | {'% of bound':>10} | "
              f"client CPU ms/call ({calls} calls)")
        for i, in_flight in enumerate(args.in_flight):
            seconds, cpu = run_once(solver_url, judge_url, data, Path(tmp) / f"run{i}", args.n, in_flight,
                                    args.concurrency)
            waves = math.ceil(args.prompts / min(in_flight, args.prompts))
            ideal = waves * per_prompt
            rate, bound = args.prompts / seconds, args.prompts / ideal
            print(f"{in_flight:>9} | {seconds:>8.2f} | {rate:>9.1f} | {bound:>8.1f} | {100 * rate / bound:>9.1f}% | "
                  f"{1000 * cpu / calls:.2f}")


if __name__ == "__main__":
    main()
