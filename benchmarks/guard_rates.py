"""Detection and false-positive rates of the injection guard per round and category of the labelled set, and of
the optional screen (a model's second opinion) measured on its own.

The labelled set is ``tests/fixtures/guard/`` (its rounds are described in ``tests/test_guard.py``). The patterns
(``autodata.guard.injection_flags``, given each row's rubric and question as the reward gives them) take
milliseconds; ``--screen`` also asks a model (``autodata.screen.Screen``) about every row, so its rates are its own,
not the patterns' and the screen's together.

    python benchmarks/guard_rates.py                                        # the patterns, every round
    python benchmarks/guard_rates.py --screen --rounds 5 --limit 12         # + the screen on the embedded model
    python benchmarks/guard_rates.py --screen --backend openai --model Qwen/Qwen3.5-27B --base-url http://h:8000/v1

Measured: see the README ("Guard against the policy").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from autodata.config import SCREEN_ROLE, EndpointConfig, ModelsConfig  # noqa: E402
from autodata.guard import injection_flags  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "guard"
ROUNDS = {"1": ("attacks.jsonl", "benign.jsonl"), "2": ("round2.jsonl",),
          **{str(n): (f"round{n}_blind.jsonl",) for n in range(3, 14)}}


def load_round(name: str) -> list[dict]:
    rows = []
    for file in ROUNDS[name]:
        path = FIXTURE / file
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if "label" not in row:  # round 1: two files, "kind" for the category
                    row = {"label": "attack" if file == "attacks.jsonl" else "benign", "category": row["kind"],
                           "text": row["text"], "rubric": [], "question": ""}
                rows.append(row)
    return rows


def report(title: str, rows: list[dict], hits: list[bool]) -> None:
    by_category: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for row, hit in zip(rows, hits):
        by_category[row["label"], row["category"]].append(hit)
    attacks = [h for r, h in zip(rows, hits) if r["label"] == "attack"]
    benign = [h for r, h in zip(rows, hits) if r["label"] == "benign"]
    print(f"\n{title}: detection {sum(attacks)}/{len(attacks)} ({sum(attacks) / max(1, len(attacks)):.1%}), "
          f"false positives {sum(benign)}/{len(benign)} ({sum(benign) / max(1, len(benign)):.1%})")
    for (label, category), found in sorted(by_category.items()):
        print(f"  {label:6} {category:34} {sum(found):3}/{len(found)}")


async def screen_hits(rows: list[dict], args: argparse.Namespace) -> tuple[list[bool], float, int]:
    from autodata.llm import LLM
    from autodata.screen import Screen

    role = EndpointConfig(backend=args.backend, model=args.model, base_url=args.base_url, max_tokens=256,
                          temperature=0.0, max_concurrency=args.concurrency)
    llm = LLM(ModelsConfig(roles={SCREEN_ROLE: role}), roles=(SCREEN_ROLE,))
    screen = Screen(llm)
    started = time.perf_counter()
    try:
        verdicts = await asyncio.gather(*(screen.verdict(r.get("question", ""), r["text"]) for r in rows))
    finally:
        await llm.aclose()
    hits = [v is not None and v.addresses_grader for v in verdicts]
    return hits, time.perf_counter() - started, sum(v is None for v in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", nargs="+", default=list(ROUNDS), choices=list(ROUNDS))
    parser.add_argument("--screen", action="store_true", help="also measure the screen on its own")
    parser.add_argument("--backend", default="local", help="the screen's backend: local, openai or vllm")
    parser.add_argument("--model", default="embedded", help="the screen's model")
    parser.add_argument("--base-url", default=None, help="the screen's server (backend openai)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None,
                        help="the screen reads only the first N attacks and N benign answers of each round (a CPU "
                             "model takes seconds per answer)")
    args = parser.parse_args()
    for name in args.rounds:
        rows = load_round(name)
        if not rows:
            continue
        started = time.perf_counter()
        hits = [bool(injection_flags(r["text"], r.get("rubric") or (), r.get("question", ""))) for r in rows]
        report(f"round {name}, patterns ({(time.perf_counter() - started) / len(rows) * 1000:.1f} ms per answer)",
               rows, hits)
        if args.screen:
            if args.limit:
                rows = ([r for r in rows if r["label"] == "attack"][:args.limit]
                        + [r for r in rows if r["label"] == "benign"][:args.limit])
                hits = [bool(injection_flags(r["text"], r.get("rubric") or (), r.get("question", ""))) for r in rows]
            found, seconds, failures = asyncio.run(screen_hits(rows, args))
            report(f"round {name}, screen alone ({args.model}, {seconds / len(rows):.2f} s per answer, "
                   f"{failures} failed calls)", rows, found)
            both = [a or b for a, b in zip(hits, found)]
            report(f"round {name}, patterns then screen", rows, both)


if __name__ == "__main__":
    main()
