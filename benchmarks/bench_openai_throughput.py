"""Throughput of the OpenAI-compatible client path against a fake server in its own process.

Four clients hit the same fake server in one run:
  aiohttp  a bare aiohttp fan-out: the ceiling of this machine and event loop
  backend  ``OpenAIBackend.complete`` (aiohttp session, semaphore, retries, balancing)
  llm      ``autodata.llm.LLM.chat`` (roles, seeds, accounting)
  loop     the generate loop's work per judge call: prompt rendering, response cache (SQLite),
           the call, verdict parsing and scoring

Two scenarios by default:
  latency  512 concurrent requests, 1 s server latency: bound = concurrency / latency
  cpu      256 concurrent requests, 50 ms latency: the client's CPU per call decides

Run (about a minute on 2 cores):

    python benchmarks/bench_openai_throughput.py
    python benchmarks/bench_openai_throughput.py --scenario latency --concurrency 1024 --total 5120
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from dataclasses import dataclass, replace
from typing import Awaitable, Callable

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fake_openai_server import MODEL, serve_in_subprocess  # noqa: E402

from autodata.backends.base import ChatRequest, Sampling  # noqa: E402
from autodata.config import DEFAULT_ENDPOINT, ModelsConfig  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "What is six times seven? Answer in one sentence."},
]


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    latency_s: float
    total: int

    @property
    def bound(self) -> float:
        return self.concurrency / self.latency_s


SCENARIOS = {
    "latency": Scenario("latency", concurrency=512, latency_s=1.0, total=2560),
    "cpu": Scenario("cpu", concurrency=256, latency_s=0.05, total=5120),
}


@dataclass
class Result:
    client: str
    calls: int
    wall_s: float
    cpu_s: float


async def fan_out(call: Callable[[int], Awaitable[object]], total: int, concurrency: int) -> None:
    """``total`` calls with at most ``concurrency`` in flight (a slot per worker, no task per call)."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await call(i)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, total))))


async def measure(name: str, call, scenario: Scenario, warmup: int) -> Result:
    await fan_out(call, warmup, scenario.concurrency)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await fan_out(call, scenario.total, scenario.concurrency)
    return Result(name, scenario.total, time.perf_counter() - wall0, time.process_time() - cpu0)


async def bench_aiohttp(url: str, scenario: Scenario, warmup: int) -> Result:
    connector = aiohttp.TCPConnector(limit=scenario.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(i: int) -> None:
            body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 64, "seed": i}
            async with session.post(f"{url}/chat/completions", json=body) as response:
                response.raise_for_status()
                await response.json()

        return await measure("aiohttp", call, scenario, warmup)


async def bench_backend(url: str, scenario: Scenario, warmup: int) -> Result:
    from autodata.backends.openai_backend import OpenAIBackend

    endpoint = replace(
        DEFAULT_ENDPOINT, backend="openai", model=MODEL, base_urls=[url], max_concurrency=scenario.concurrency
    )
    backend = OpenAIBackend(endpoint)
    try:

        async def call(i: int) -> None:
            await backend.complete(ChatRequest(messages=MESSAGES, sampling=Sampling(max_tokens=64, seed=i)))

        return await measure("backend", call, scenario, warmup)
    finally:
        await backend.aclose()


async def bench_llm(url: str, scenario: Scenario, warmup: int) -> Result | None:
    try:
        from autodata.llm import LLM
    except ImportError as err:
        print(f"  (skipping the llm client: autodata.llm is not importable: {err})")
        return None
    models = ModelsConfig(backend="openai", model=MODEL, base_url=url)
    models.default.max_concurrency = scenario.concurrency
    models.default.max_tokens = 64
    llm = LLM(models, cache=None, seed=0)
    try:

        async def call(i: int) -> None:
            await llm.chat("weak_solver", MESSAGES, seed_key=f"bench/{i}")

        return await measure("llm", call, scenario, warmup)
    finally:
        await llm.aclose()


async def bench_loop(url: str, scenario: Scenario, warmup: int) -> Result | None:
    """The generate loop's per-call work: render a CS judge prompt, cache, call, parse verdicts, score."""
    import json
    import tempfile

    from autodata.cache import ResponseCache
    from autodata.config import DomainConfig
    from autodata.domains import Criterion, Task, build_domain
    from autodata.llm import LLM, extract_json

    domain = build_domain(DomainConfig())
    task = Task(question="Predict what the interpreter prints and justify each step.", context="A short program.",
                reference_answer="It prints 3.",
                rubric=[Criterion(f"States consequence {i}", 5 if i < 9 else -3, "reasoning") for i in range(12)])
    verdicts = json.dumps({"verdicts": [{"id": i + 1, "met": i % 2 == 0} for i in range(12)]})
    models = ModelsConfig(backend="openai", model=MODEL, base_url=url)
    models.default.max_concurrency = scenario.concurrency
    models.default.max_tokens = 64
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(f"{tmp}/cache.sqlite")
        llm = LLM(models, cache=cache, seed=0)
        try:

            async def call(i: int) -> None:
                messages = domain.judge_messages(task, f"Answer number {i}: it prints 3 because ...")
                await llm.chat("judge", messages, schema=domain.judge_schema(task), seed_key=f"bench/{i}")
                # The fake server's text is not a verdict; parse a canned one so the cost is counted.
                domain.parse_grade(task, extract_json(verdicts))

            return await measure("loop", call, scenario, warmup)
        finally:
            await llm.aclose()
            cache.close()


def print_table(scenario: Scenario, results: list[Result]) -> None:
    print(
        f"\n{scenario.name}: {scenario.concurrency} concurrent, {scenario.latency_s * 1000:g} ms latency, "
        f"{scenario.total} calls; bound {scenario.bound:,.0f} calls/s"
    )
    print(f"  {'client':<8} {'wall s':>7} {'calls/s':>9} {'% bound':>8} {'CPU ms/call':>12} {'+ vs prev':>10}")
    previous = None
    for r in results:
        per_call_ms = 1000 * r.cpu_s / r.calls
        extra = f"{per_call_ms - previous:+.3f}" if previous is not None else ""
        rate = r.calls / r.wall_s
        print(
            f"  {r.client:<8} {r.wall_s:>7.2f} {rate:>9,.0f} {100 * rate / scenario.bound:>7.1f}% "
            f"{per_call_ms:>12.3f} {extra:>10}"
        )
        previous = per_call_ms


async def run_scenario(scenario: Scenario, clients: list[str], warmup: int) -> list[Result]:
    runners = {"aiohttp": bench_aiohttp, "backend": bench_backend, "llm": bench_llm, "loop": bench_loop}
    results = []
    with serve_in_subprocess(scenario.latency_s) as url:
        for client in clients:
            result = await runners[client](url, scenario, warmup)
            if result is not None:
                results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Throughput of bare aiohttp vs OpenAIBackend vs LLM.chat")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--concurrency", type=int, help="requests in flight (overrides the scenario's)")
    parser.add_argument("--latency", type=float, help="server seconds per request (overrides the scenario's)")
    parser.add_argument("--total", type=int, help="measured calls per client (overrides the scenario's)")
    parser.add_argument("--clients", default="aiohttp,backend,llm,loop", help="comma-separated subset of the four")
    parser.add_argument("--warmup", type=int, help="unmeasured calls first, to open the pool (default: concurrency)")
    args = parser.parse_args()

    # Each in-flight request holds a socket in this process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    chosen = list(SCENARIOS.values()) if args.scenario == "all" else [SCENARIOS[args.scenario]]
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for scenario in chosen:
        scenario = replace(
            scenario,
            concurrency=args.concurrency or scenario.concurrency,
            latency_s=args.latency if args.latency is not None else scenario.latency_s,
            total=args.total or scenario.total,
        )
        warmup = args.warmup if args.warmup is not None else scenario.concurrency
        results = asyncio.run(run_scenario(scenario, clients, warmup))
        print_table(scenario, results)
    print("\nCPU ms/call is this process's CPU time over the measured calls; '+ vs prev' is what the layer adds.")


if __name__ == "__main__":
    main()
