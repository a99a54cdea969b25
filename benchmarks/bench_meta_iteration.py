"""One meta-optimizer iteration's wall time against its critical path of model calls, and the parent recheck's cache.

``stage=meta_optimize`` runs as the CLI (``python -m autodata.run``, a subprocess, so the measurement includes
everything: config, corpus, SQLite cache, run-dir files) against the fake OpenAI-compatible server
(benchmarks/fake_openai_server.py in its own process, ``--schema-json``: every structured request gets a small
valid object, salted by its prompt; the implementer's "edit" schema gets a fixed knob edit, so the child passes
the guards and is scored). Six documents of about 480 characters: 2 validate, 2 train, a minibatch of 1, one iteration,
two rounds per document, the CPU experiment's sizes otherwise (7-8 positive criteria, solver waves of 2).

The critical path is counted from the run's own files: per round in rounds.jsonl, the sequential call levels
(challenger -> qv -> each weak wave -> its judges (concurrent, one level) -> each strong wave -> its judges ->
feedback; a JSON repair is one more level; a call under half the latency was served from the cache and counts
none); per document the sum over its rounds; per scoring run the documents in up to generate.max_docs_in_flight
slots; then the analyzer and implementer (iterations/1/agents.json) and the parent recheck (no model calls).
Critical path = latency x levels. Also reported: the recheck's cache share (target 1.0) and model calls (target 0).

    python benchmarks/bench_meta_iteration.py                 # latency 0.2 s, about 16 s on 2 cores
    python benchmarks/bench_meta_iteration.py --latency 1.0 --keep /tmp/meta_bench   # keep the run dir

Measured on this machine (2 CPU cores, latency 0.2 s, three runs): each round is 9 levels (challenger, qv, weak
wave of 2 + judges, weak wave of 1 + judge, strong wave of 2 + judges, feedback; every task fails on strong), so a
document is 18. Baseline scoring 3.79-3.84 s for 18 levels (3.60 s, x1.05-1.07). The iteration 8.20-8.40 s for 38
levels (7.60 s, x1.08-1.11): minibatch 18 levels in 3.83-3.87 s, analyzer + implementer 2, child validation 18 in
3.75-3.85 s, parent recheck 0 (0 model calls, 44 served from the cache: cache share 1.00, score matches; about
0.1 s by run.log). Whole process 14.6-15.1 s. The iteration's wall minus latency x levels is a near-constant
0.6-0.8 s (x1.37 at --latency 0.05, x1.02 at --latency 1.0): about 0.2 s per scoring run (start-up check,
files, a slower first round) plus the guards and the recheck.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_openai_server import MODEL, serve_in_subprocess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The implementer's answer: a knob edit that passes every guard and changes the challenger prompt
EDIT = json.dumps({"rationale": "ban one more generic phrasing", "templates": [],
                   "knobs": [{"name": "banned_phrasings", "value": "explain why, explain how, discuss"}]})
SOLVERS = ("weak_solver", "strong_solver")


def write_corpus(path: Path, documents: int) -> None:
    words = "cache eviction policy latency throughput queue scheduler lock contention replica quorum".split()
    with path.open("w") as fh:
        for d in range(documents):
            text = " ".join(words[(d + i) % len(words)] for i in range(60))
            fh.write(json.dumps({"id": f"doc{d}", "text": f"Document {d}. {text}."}) + "\n")


def round_levels(calls: list[dict[str, Any]], latency: float) -> int:
    """Sequential model-call levels of one round: a solver wave's judges run at once (one level, the longest
    of them); a JSON answer that needed a repair is two; a call under half the latency came from the cache."""
    def cost(call: dict[str, Any]) -> int:
        if call.get("seconds", 0.0) < latency / 2:
            return 0
        return len(call.get("outputs") or [None]) if "parse_error" in call else 1

    levels, wave = 0, None
    for call in calls:
        if call["role"] == "judge" and wave is not None:
            wave = max(wave, cost(call))
            continue
        levels += wave or 0
        wave = 0 if call["role"] in SOLVERS else None
        levels += cost(call)
    return levels + (wave or 0)


def run_levels(rounds: Iterable[dict[str, Any]], latency: float, in_flight: int) -> int:
    """Levels of a scoring run: each document's rounds in sequence, documents in ``in_flight`` slots (in the
    order they started, each taking the slot that frees first)."""
    per_doc: dict[str, int] = {}
    for row in rounds:
        per_doc[row["document_id"]] = per_doc.get(row["document_id"], 0) + round_levels(row["calls"], latency)
    slots = [0] * max(1, in_flight)
    for levels in per_doc.values():
        slots[slots.index(min(slots))] += levels
    return max(slots) if per_doc else 0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_meta(url: str, work: Path, latency: float, in_flight: int,
             parent_reeval: str = "fresh") -> tuple[float, Path]:
    corpus, run_dir = work / "docs.jsonl", work / "run"
    # A run dir left by an earlier --keep would resume (its iteration already done): start afresh
    shutil.rmtree(run_dir, ignore_errors=True)
    write_corpus(corpus, 6)
    command = [sys.executable, "-m", "autodata.run", "stage=meta_optimize", "models=openai",
               f"models.base_url={url}", f"models.model={MODEL}", "corpus=jsonl", f"corpus.path={corpus}",
               "corpus.limit=null", "meta.validation_documents=2", "meta.train_documents=2", "meta.minibatch_size=1",
               "meta.iterations=1", "meta.concurrency=1", "generate.max_rounds=2",
               f"generate.max_docs_in_flight={in_flight}", f"meta.parent_reeval={parent_reeval}", "progress=false",
               f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the meta run failed (exit code {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return wall, run_dir


def stats_wall(folder: Path) -> float:
    return float(json.loads((folder / "stats.json").read_text())["wall_seconds"])


def report(run_dir: Path, latency: float, in_flight: int, process_wall: float) -> dict[str, Any]:
    baseline = read_jsonl(run_dir / "population.jsonl")[0]["id"]
    [row] = read_jsonl(run_dir / "history.jsonl")
    it = run_dir / "iterations" / "1"
    base_dir = run_dir / "variants" / baseline / "validation"
    mini_dir = it / "minibatch"
    agents = json.loads((it / "agents.json").read_text())
    agent_levels = sum(len(a.get("outputs") or []) for a in agents.values())
    child_dir = run_dir / "variants" / row["child"] / "validation" if row.get("child") else None
    recheck = row.get("parent_recheck") or {}
    reeval = row.get("parent_reeval") or {}
    reeval_dir = it / "parent_reeval"
    phases = {
        "baseline": (run_levels(read_jsonl(base_dir / "rounds.jsonl"), latency, in_flight), stats_wall(base_dir)),
        "minibatch": (run_levels(read_jsonl(mini_dir / "rounds.jsonl"), latency, in_flight), stats_wall(mini_dir)),
        "agents": (agent_levels, None),
        "child": ((run_levels(read_jsonl(child_dir / "rounds.jsonl"), latency, in_flight), stats_wall(child_dir))
                  if child_dir else (0, None)),
        # meta.parent_reeval=fresh: the parent on the validation documents again, with new seeds
        "parent": ((run_levels(read_jsonl(reeval_dir / "rounds.jsonl"), latency, in_flight), stats_wall(reeval_dir))
                   if reeval else (0, None)),
        # meta.parent_reeval=cached: served from the cache, no level unless calls reached the model (then unknown:
        # counted as one each)
        "recheck": (recheck.get("model_calls") or 0, None),
    }
    iteration_levels = sum(phases[p][0] for p in ("minibatch", "agents", "child", "parent", "recheck"))
    return {"phases": phases, "iteration_wall": float(row["seconds"]), "iteration_levels": iteration_levels,
            "recheck": recheck, "reeval": reeval, "row": row, "process_wall": process_wall}


def print_report(r: dict[str, Any], latency: float) -> None:
    print(f"\n{'phase':<10} {'levels':>6} {'path s':>7} {'wall s':>7} {'wall/path':>9}")
    for name, (levels, wall) in r["phases"].items():
        path = levels * latency
        ratio = f"{wall / path:.2f}" if wall is not None and path else ""
        print(f"{name:<10} {levels:>6} {path:>7.2f} {'' if wall is None else f'{wall:.2f}':>7} {ratio:>9}")
    path = r["iteration_levels"] * latency
    print(f"{'iteration':<10} {r['iteration_levels']:>6} {path:>7.2f} {r['iteration_wall']:>7.2f} "
          f"{r['iteration_wall'] / path if path else float('nan'):>9.2f}")
    known = sum(w for p, (_, w) in r["phases"].items() if p in ("minibatch", "child", "parent") and w is not None)
    print(f"\niteration wall outside the scoring runs (agents, guards, recheck, files): "
          f"{r['iteration_wall'] - known:.2f} s for {r['phases']['agents'][0]} agent calls")
    rc, fresh = r["recheck"], r["reeval"]
    if rc:
        share = rc.get("cache_share")
        print(f"parent recheck (cached): cache share {'-' if share is None else f'{share:.2f}'} (target 1.00), "
              f"model calls {rc.get('model_calls')} (target 0), cached calls {rc.get('cached_calls')}, score "
              f"matches {rc.get('matches')}")
    if fresh:
        print(f"parent re-evaluation (fresh): {fresh.get('model_calls')} model calls, {fresh.get('cached_calls')} "
              f"from the cache; score {fresh.get('score')}, stored mean {fresh.get('mean')} over "
              f"{fresh.get('evaluations')} evaluations")
    row = r["row"]
    print(f"child {row.get('child')}: {row.get('rejection') or 'kept'}; whole process {r['process_wall']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the fake server takes per call")
    parser.add_argument("--in-flight", type=int, default=2, help="generate.max_docs_in_flight")
    parser.add_argument("--keep", help="keep the run dir here (default: a temporary folder)")
    parser.add_argument("--parent-reeval", default="fresh", choices=("fresh", "cached", "none"),
                        help="meta.parent_reeval of the run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            serve_in_subprocess(args.latency, schema_json=True, schema_answers={"edit": EDIT}) as url:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"fake server latency {args.latency} s; {os.cpu_count()} CPUs; running stage=meta_optimize ...")
        wall, run_dir = run_meta(url, work, args.latency, args.in_flight, args.parent_reeval)
        print_report(report(run_dir, args.latency, args.in_flight, wall), args.latency)


if __name__ == "__main__":
    main()
