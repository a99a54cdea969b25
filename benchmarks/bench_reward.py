"""Reward time of one GRPO step: concurrent judge calls against sequential ones (same judge, same completions).

The judge is the fake OpenAI-compatible server (benchmarks/fake_openai_server.py, in its own process) answering
every request after a fixed latency with a valid verdict for a 10-criterion rubric, reached through the real
path: ``training.reward.JudgeReward`` -> ``autodata.llm.LLM`` (role judge) -> ``OpenAIBackend`` over HTTP.
One step is the paper's CS batch by default: 16 prompts x 8 completions = 128 judge calls (one process).
The response cache is off, so both modes pay for every call.

    python benchmarks/bench_reward.py                          # latency 0.5 s, 16 x 8 completions
    python benchmarks/bench_reward.py --latency 2.0 --prompts 4 --group 8

Target: concurrent reward time close to one judge call's latency, not k times it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from typing import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_openai_server import READY  # noqa: E402

from autodata.config import DomainConfig, ModelsConfig  # noqa: E402
from autodata.domains import Criterion, Task, build_domain  # noqa: E402
from autodata.llm import LLM  # noqa: E402
from training.reward import JudgeLoop, JudgeReward  # noqa: E402

CRITERIA = 10
VERDICT = json.dumps({"verdicts": [{"id": i, "met": i % 3 != 0} for i in range(1, CRITERIA + 1)]})
# Runs fake_openai_server with its fixed answer replaced by a judge verdict (the module reads ANSWER per request).
SERVER = ("import asyncio, sys; sys.path.insert(0, {here!r}); import fake_openai_server as f; f.ANSWER = {answer!r}; "
          "asyncio.run(f._serve('127.0.0.1', 0, {latency}))")


@contextlib.contextmanager
def judge_server(latency_s: float) -> Iterator[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    code = SERVER.format(here=here, answer=VERDICT, latency=latency_s)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith(READY):
            raise RuntimeError(f"fake judge server did not start (exit code {process.poll()}, said {line!r})")
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(10)


def step_batch(prompts: int, group: int) -> tuple[list[Task], list[str], list[str]]:
    tasks, texts, ids = [], [], []
    for p in range(prompts):
        task = Task(question=f"Predict the output of program {p} and justify each step.", context="A small program.",
                    reference_answer="It prints 3.",
                    rubric=[Criterion(f"States consequence {i} of the rule", 5 if i < 8 else -3)
                            for i in range(CRITERIA)])
        for g in range(group):
            tasks.append(task)
            texts.append(f"Completion {g} of prompt {p}: the program prints 3 because the loop runs three times.")
            ids.append(f"bench/{p}")
    return tasks, texts, ids


def measure(url: str, tasks: list[Task], texts: list[str], ids: list[str], concurrency: int | None,
            max_concurrency: int) -> float:
    models = ModelsConfig(backend="openai", base_url=url, model="fake-model")
    models.default.max_concurrency = max_concurrency
    loop = JudgeLoop()
    try:
        llm = LLM(models, cache=None)
        reward = JudgeReward(build_domain(DomainConfig(name="cs")), llm, loop=loop, concurrency=concurrency)
        loop.run(llm.backends["judge"].check())
        loop.run(reward.score(tasks[:2], texts[:2], ids[:2]))  # warm the connection pool
        started = time.perf_counter()
        result = loop.run(reward.score(tasks, texts, ids))
        seconds = time.perf_counter() - started
        failed = sum(1 for r in result.rewards if r is None)
        if failed:
            raise RuntimeError(f"{failed} judge calls failed; the benchmark needs every call to succeed")
        loop.run(llm.aclose())
        return seconds
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the fake judge takes per call")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step (paper CS batch: 16)")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (paper: 8)")
    parser.add_argument("--max-concurrency", type=int, default=256, help="the judge endpoint's max_concurrency")
    args = parser.parse_args()

    tasks, texts, ids = step_batch(args.prompts, args.group)
    k = len(texts)
    with judge_server(args.latency) as url:
        concurrent = measure(url, tasks, texts, ids, None, args.max_concurrency)
        sequential = measure(url, tasks, texts, ids, 1, args.max_concurrency)
    print(f"judge latency per call     {args.latency:.3f} s")
    print(f"completions in the step    {k} ({args.prompts} prompts x {args.group})")
    print(f"reward time, concurrent    {concurrent:.3f} s  ({concurrent / args.latency:.2f} x one call)")
    print(f"reward time, sequential    {sequential:.3f} s  ({sequential / args.latency:.2f} x one call)")
    print(f"speed-up (sequential / concurrent): {sequential / concurrent:.1f}x")


if __name__ == "__main__":
    main()
