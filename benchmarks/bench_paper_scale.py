"""The paper's CS arm, simulated: stage=generate against paper-world fake servers, side by side with stage=plan.

    python benchmarks/bench_paper_scale.py --arm --compression 8 --out arm.json   # 1400 documents
    python benchmarks/bench_paper_scale.py --growth --out growth.json  # 50, 200, 800 documents
    python benchmarks/bench_paper_scale.py --arm --documents 20 --compression 400   # a quick look (~30 s)

Each model role gets its own server process (benchmarks/paper_world_server.py) whose latency is the role's
assumed real latency divided by ``--compression``; the generate process runs with the paper's concurrency caps
(conf/models/paper.yaml: weak solver 1024, every other role 256) against a generated JSONL corpus
(benchmarks/make_corpus.py) whose documents need 6.59 rounds each on average, so every document ends accepted at
its round and the run does the paper's ~9,200 rounds for 1,400 accepted examples.

Assumed real latencies (seconds per call under load): the plan's output tokens per call
(autodata/config.py ``_default_plan_tokens``) at 50 tokens/s per request: challenger 2,500 tokens -> 50 s,
quality_verifier 500 -> 10 s, weak and strong solver 4,000 -> 80 s, judge 800 -> 16 s, feedback 200 -> 4 s.
stage=plan gets the same values (plan.roles.<role>.latency_s) and the same caps.

--arm measures: calls per role (stats.json per_role), rounds, accepted, mean rounds per accepted, wall time (the
process's, and first call to last answer x compression, against the plan's wall_hours), the share of each role's
slots kept busy (integral of its requests in flight / (max_concurrency x window), from the servers' request
times) over two windows: the whole work span (first call to last answer) and its middle 80%, the steady window
(it leaves out the ramp while the first calls of every document reach the solvers and the tail where only the
documents needing the most rounds still run), plus the busy share of the bottleneck role in ten equal bins;
peak RSS and CPU seconds (user + sys) of the generate process (os.wait4's rusage) per model call, and the sizes
of rounds.jsonl, accepted.jsonl, documents.jsonl and cache.sqlite (+ -wal).

--growth runs the same world at 1x, 4x and 16x ``--documents`` (default 100) and adds, per size: time to start
(the same command again on the finished run dir: process wall until exit, and process start to its first model
call on a fresh run), resume after kill -9 at half way (SIGKILL of the process group once documents.jsonl holds
half the documents, then the same command again: its wall, and that the run dir ends with every document once and
no duplicate accepted or round rows), and the time per progress/stats update, measured in this process: Progress
round_done + document_done with a fake bar (per event), and read + compute_stats over the finished run dir (what
the end of a run and a resume pay). Ratios against 1x show whether a cost grows linearly with the work.

Measured here (2 cores; README "A paper-scale arm, simulated" has the tables): --arm --compression 8 about 11 min
(585 s of simulated work, 3.63 ms of orchestrator CPU per call; at 16x compression the generate process is CPU-bound
on 2 cores and the wall time measures it, not the arm); --arm --documents 280 --docs-in-flight 70 --compression 100
about 2 min; --growth --documents 50 about 10 min; the quick look above ~30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from make_corpus import make_corpus  # noqa: E402
from paper_world_server import ROLES, start_server  # noqa: E402

TOKENS_PER_S = 50.0
OUTPUT_TOKENS = {"challenger": 2500, "quality_verifier": 500, "weak_solver": 4000, "strong_solver": 4000,
                 "judge": 800, "feedback": 200}
REAL_LATENCY_S = {role: tokens / TOKENS_PER_S for role, tokens in OUTPUT_TOKENS.items()}
CONCURRENCY = {role: 1024 if role == "weak_solver" else 256 for role in ROLES}
FILES = ("rounds.jsonl", "accepted.jsonl", "documents.jsonl", "cache.sqlite", "cache.sqlite-wal")


class World:
    """One paper-world server per role, latencies compressed by ``compression``."""

    def __init__(self, compression: float):
        self.compression = compression
        self.processes: list[subprocess.Popen] = []
        self.urls: dict[str, str] = {}

    def __enter__(self) -> "World":
        try:
            for role in ROLES:
                process, url = start_server(role, REAL_LATENCY_S[role] / self.compression, CONCURRENCY[role],
                                            OUTPUT_TOKENS[role])
                self.processes.append(process)
                self.urls[role] = url
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(10)

    def _call(self, role: str, path: str, body: Optional[dict] = None) -> dict[str, Any]:
        root = self.urls[role].removesuffix("/v1")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(root + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, dict[str, Any]]:
        return {role: self._call(role, "/stats") for role in ROLES}

    def busy(self, windows: list[tuple[float, float]]) -> dict[str, list[float]]:
        """Per role, the share of its slots busy over each window."""
        out = {}
        for role in ROLES:
            seconds = self._call(role, "/busy", {"windows": windows})["busy_seconds"]
            out[role] = [s / (CONCURRENCY[role] * (t1 - t0)) if t1 > t0 else 0.0
                         for s, (t0, t1) in zip(seconds, windows)]
        return out

    def reset(self) -> None:
        for role in ROLES:
            self._call(role, "/reset", {})


def generate_argv(corpus: Path, run_dir: Path, urls: dict[str, str], docs_in_flight: int) -> list[str]:
    argv = [sys.executable, "-m", "autodata.run", "stage=generate", "experiment=paper_cs", "corpus=jsonl",
            f"corpus.path={corpus}", "generate.target_accepted=null", f"generate.max_docs_in_flight={docs_in_flight}",
            "models.model=paperworld", "models.api_key_env=''", "logger=none", "progress=false",
            f"hydra.run.dir={run_dir}"]
    for role in ROLES:
        argv += [f"models.roles.{role}.base_url={urls[role]}", f"models.roles.{role}.model=paperworld",
                 f"models.roles.{role}.api_key_env=''", f"models.roles.{role}.max_concurrency={CONCURRENCY[role]}"]
    return argv


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def run_generate(argv: list[str], run_dir: Path, kill_at_docs: Optional[int] = None,
                 log_name: str = "generate.log") -> dict[str, Any]:
    """Run one generate process; wall, CPU and peak RSS from its rusage; with ``kill_at_docs``, SIGKILL its process
    group once documents.jsonl holds that many rows."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = (run_dir.parent / f"{run_dir.name}.{log_name}").open("ab")
    started = time.time()
    process = subprocess.Popen(argv, cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killed = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if kill_at_docs is not None and not killed and _lines(run_dir / "documents.jsonl") >= kill_at_docs:
            os.killpg(process.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if process.returncode != 0 and not killed:
        tail = (run_dir.parent / f"{run_dir.name}.{log_name}").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"generate exited {process.returncode}:\n{tail}")
    return {"started": started, "wall_s": time.time() - started, "exit_code": process.returncode, "killed": killed,
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def sizes(run_dir: Path) -> dict[str, int]:
    return {name: (run_dir / name).stat().st_size if (run_dir / name).exists() else 0 for name in FILES}


def run_plan(accepted: int, docs_in_flight: int, run_dir: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "autodata.run", "stage=plan", "experiment=paper_cs", f"plan.target={accepted}",
            f"generate.max_docs_in_flight={docs_in_flight}", "logger=none", f"hydra.run.dir={run_dir}"]
    for role in ROLES:
        argv += [f"plan.roles.{role}.latency_s={REAL_LATENCY_S[role]}",
                 f"models.roles.{role}.max_concurrency={CONCURRENCY[role]}"]
    subprocess.run(argv, cwd=HERE.parent, check=True, capture_output=True, text=True)
    return json.loads((run_dir / "plan.json").read_text())


def simulate(world: World, corpus: Path, run_dir: Path, documents: int, docs_in_flight: int) -> dict[str, Any]:
    """One fresh generate run; the process's costs, the run's stats and the servers' view of it."""
    world.reset()
    proc = run_generate(generate_argv(corpus, run_dir, world.urls, docs_in_flight), run_dir)
    servers = world.stats()
    first = min(s["first_start"] for s in servers.values() if s["first_start"])
    last = max(s["last_end"] for s in servers.values() if s["last_end"])
    span = last - first
    windows = [(first, last), (first + 0.1 * span, last - 0.1 * span)]
    bins = [(first + i * span / 10, first + (i + 1) * span / 10) for i in range(10)]
    busy = world.busy(windows + bins)
    stats = json.loads((run_dir / "stats.json").read_text())
    chain = longest_chain_s(run_dir)
    calls = sum(r["calls"] for r in stats["per_role"].values())
    return {"documents": documents, **proc, "first_call_s": first - proc["started"], "work_span_s": span,
            "calls": calls, "cpu_ms_per_call": 1000 * proc["cpu_s"] / calls if calls else None,
            "rounds": stats["rounds"], "accepted": stats["accepted"],
            "mean_rounds_per_accepted": stats["mean_rounds_per_accepted"],
            "per_role_calls": {r: stats["per_role"].get(r, {}).get("calls", 0) for r in ROLES},
            "server_requests": {r: s["requests"] for r, s in servers.items()},
            "peak_in_flight": {r: s["peak_in_flight"] for r, s in servers.items()},
            "busy_whole": {r: b[0] for r, b in busy.items()}, "busy_steady": {r: b[1] for r, b in busy.items()},
            "busy_bins": {r: b[2:] for r, b in busy.items()}, "sizes": sizes(run_dir),
            "longest_chain_real_s": chain}


def longest_chain_s(run_dir: Path) -> Optional[float]:
    """The longest document's calls end to end at the real latencies, without queueing: a floor on the run's wall
    time that a throughput model leaves out (each round's calls run one after another with generate.solver_wave=1
    and one challenger). None when rounds.jsonl carries no per-role call counts."""
    from autodata.rundir import read_jsonl

    chains: dict[str, float] = {}
    for row in read_jsonl(run_dir / "rounds.jsonl"):
        tokens = row.get("tokens")
        if not isinstance(tokens, dict):
            return None
        chains[row["document_id"]] = chains.get(row["document_id"], 0.0) + sum(
            t.get("calls", 0) * REAL_LATENCY_S.get(role, 0.0) for role, t in tokens.items())
    return max(chains.values(), default=None)


# ---------------------------------------------------------------------------------------------------------- arm
def arm(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    corpus = work / "corpus.jsonl"
    make_corpus(corpus, args.documents, args.doc_chars)
    in_flight = args.docs_in_flight or args.documents
    with World(args.compression) as world:
        sim = simulate(world, corpus, work / "arm", args.documents, in_flight)
    plan = run_plan(sim["accepted"], in_flight, work / "plan")
    return {"compression": args.compression, "latency_s": REAL_LATENCY_S, "concurrency": CONCURRENCY,
            "docs_in_flight": in_flight, "doc_chars": args.doc_chars, "simulated": sim, "plan": plan}


def _pct(a: Optional[float], b: Optional[float]) -> str:
    return "-" if not a or b is None else f"{100 * (b - a) / a:+.1f}%"


def arm_table(result: dict[str, Any]) -> str:
    sim, plan, c = result["simulated"], result["plan"], result["compression"]
    lines = ["| role | planned calls | simulated calls | diff % | planned busy | simulated busy (steady / whole) |",
             "|---|---:|---:|---:|---:|---:|"]
    for role in ROLES:
        p = plan["roles"].get(role, {})
        planned, simulated = p.get("calls"), sim["per_role_calls"][role]
        busy = f"{p['busy_share']:.0%}" if "busy_share" in p else "-"
        lines.append(f"| {role} | {planned or 0:,.0f} | {simulated:,} | {_pct(planned, simulated)} | {busy} | "
                     f"{sim['busy_steady'][role]:.0%} / {sim['busy_whole'][role]:.0%} |")
    planned_wall = plan["fleet"].get("wall_hours", 0) * 3600
    lines += ["", f"- documents {sim['documents']:,}, rounds {sim['rounds']:,} (planned "
                  f"{plan['model'].get('rounds', 0):,.0f}), accepted {sim['accepted']:,}, mean rounds per accepted "
                  f"{sim['mean_rounds_per_accepted']:.2f}",
              f"- wall: simulated work span {sim['work_span_s']:.0f} s x compression {c:g} = "
              f"{sim['work_span_s'] * c / 3600:.2f} h vs planned {planned_wall / 3600:.2f} h "
              f"({_pct(planned_wall, sim['work_span_s'] * c)}); process wall {sim['wall_s']:.0f} s; bottleneck "
              f"(plan) {plan['fleet'].get('bottleneck')}",
              f"- longest document's calls end to end at the real latencies (no queueing): "
              f"{(sim['longest_chain_real_s'] or 0) / 3600:.2f} h, a floor on the wall time",
              "- bottleneck busy in ten bins: " + " ".join(
                  f"{b:.0%}" for b in sim["busy_bins"].get(plan["fleet"].get("bottleneck"), [])),
              f"- orchestrator: {sim['cpu_s']:.0f} CPU s for {sim['calls']:,} calls = {sim['cpu_ms_per_call']:.2f} "
              f"ms/call ({1000 / sim['cpu_ms_per_call']:,.0f} calls per CPU second; plan assumes "
              f"{plan['fleet'].get('orchestrator_calls_per_s', 0):,.0f}/s); peak RSS {sim['peak_rss_mb']:.0f} MB; "
              "peak in flight " + ", ".join(f"{r} {n:,}" for r, n in sim["peak_in_flight"].items()),
              "- files: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sim["sizes"].items())]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- growth
class _Bar:
    mininterval = 0.1

    def set_postfix(self, postfix: dict[str, Any]) -> None:
        self.last = postfix

    def update(self, n: int) -> None:
        pass


def update_costs(run_dir: Path, events: int = 20000) -> dict[str, float]:
    """Microseconds per Progress event (fake bar, this process's usage counters), and seconds to read the run dir's
    files and compute_stats over them."""
    from types import SimpleNamespace

    from autodata.generate.outputs import compute_stats
    from autodata.generate.progress import Counts, Progress
    from autodata.rundir import read_jsonl

    llm = SimpleNamespace(usage={r: SimpleNamespace(calls=10, cached_calls=0, completion_tokens=5) for r in ROLES},
                          endpoints={r: SimpleNamespace(backend="openai") for r in ROLES})
    progress = Progress(Counts(), llm, bar=_Bar())
    started = time.perf_counter()
    for i in range(events):
        progress.round_done()
        progress.document_done(i % 2 == 0)
    per_event_us = 1e6 * (time.perf_counter() - started) / (2 * events)
    started = time.perf_counter()
    rows = {name: list(read_jsonl(run_dir / name)) for name in ("rounds.jsonl", "documents.jsonl", "accepted.jsonl")}
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    compute_stats(rows["rounds.jsonl"], rows["documents.jsonl"], rows["accepted.jsonl"], len(rows["documents.jsonl"]))
    return {"progress_event_us": per_event_us, "read_run_dir_s": read_s,
            "compute_stats_s": time.perf_counter() - started}


def check_resumed(run_dir: Path, documents: int) -> dict[str, Any]:
    """Every document once in the ledger, no accepted example or round twice."""
    from autodata.rundir import read_jsonl

    ledger = [r["document_id"] for r in read_jsonl(run_dir / "documents.jsonl")]
    accepted = [r["id"] for r in read_jsonl(run_dir / "accepted.jsonl")]
    rounds = [(r["document_id"], r["round"]) for r in read_jsonl(run_dir / "rounds.jsonl")]
    ok = (len(set(ledger)) == documents == len(ledger) and len(set(accepted)) == len(accepted)
          and len(set(rounds)) == len(rounds))
    return {"ok": ok, "ledger_rows": len(ledger), "distinct_documents": len(set(ledger)),
            "duplicate_accepted": len(accepted) - len(set(accepted)), "duplicate_rounds": len(rounds) - len(set(rounds))}


def growth(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rows = []
    with World(args.compression) as world:
        for factor in args.factors:
            n = args.documents * factor
            corpus = work / f"corpus_{n}.jsonl"
            make_corpus(corpus, n, args.doc_chars)
            in_flight = args.docs_in_flight or n
            run_dir = work / f"run_{n}"
            row = simulate(world, corpus, run_dir, n, in_flight)
            row["update"] = update_costs(run_dir)
            argv = generate_argv(corpus, run_dir, world.urls, in_flight)
            row["restart_done"] = run_generate(argv, run_dir, log_name="restart.log")
            resume_dir = work / f"resume_{n}"
            world.reset()
            resume_argv = generate_argv(corpus, resume_dir, world.urls, in_flight)
            row["killed"] = run_generate(resume_argv, resume_dir, kill_at_docs=n // 2, log_name="killed.log")
            row["killed"]["documents_at_kill"] = _lines(resume_dir / "documents.jsonl")
            world.reset()
            row["resume"] = run_generate(resume_argv, resume_dir, log_name="resume.log")
            first = [s["first_start"] for s in world.stats().values() if s["first_start"]]
            row["resume"]["first_call_s"] = min(first) - row["resume"]["started"] if first else None
            row["resume"]["check"] = check_resumed(resume_dir, n)
            rows.append(row)
            print(f"{n} documents: wall {row['wall_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    return {"compression": args.compression, "doc_chars": args.doc_chars, "rows": rows}


def growth_table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    base = rows[0]

    def ratio(value: float, first: float) -> str:
        return f"{value:,.3g} ({value / first:.1f}x)" if first else f"{value:,.3g}"

    metrics = [
        ("rounds", lambda r: r["rounds"]),
        ("model calls", lambda r: r["calls"]),
        ("wall s", lambda r: r["wall_s"]),
        ("peak RSS MB", lambda r: r["peak_rss_mb"]),
        ("CPU ms per call", lambda r: r["cpu_ms_per_call"]),
        ("rounds.jsonl MB", lambda r: r["sizes"]["rounds.jsonl"] / 1e6),
        ("rounds.jsonl KB per round", lambda r: r["sizes"]["rounds.jsonl"] / 1e3 / r["rounds"]),
        ("accepted.jsonl MB", lambda r: r["sizes"]["accepted.jsonl"] / 1e6),
        ("documents.jsonl MB", lambda r: r["sizes"]["documents.jsonl"] / 1e6),
        ("cache.sqlite (+wal) MB", lambda r: (r["sizes"]["cache.sqlite"] + r["sizes"]["cache.sqlite-wal"]) / 1e6),
        ("start to first call s", lambda r: r["first_call_s"]),
        ("rerun of a finished run s", lambda r: r["restart_done"]["wall_s"]),
        ("rerun of a finished run peak RSS MB", lambda r: r["restart_done"]["peak_rss_mb"]),
        ("resume after kill -9 at half, wall s", lambda r: r["resume"]["wall_s"]),
        ("resume: start to first call s", lambda r: r["resume"]["first_call_s"] or 0.0),
        ("progress event us", lambda r: r["update"]["progress_event_us"]),
        ("read run dir s", lambda r: r["update"]["read_run_dir_s"]),
        ("compute_stats s", lambda r: r["update"]["compute_stats_s"]),
    ]
    header = "| measure | " + " | ".join(f"{r['documents']:,} docs" for r in rows) + " |"
    lines = [header, "|---|" + "---:|" * len(rows)]
    for name, get in metrics:
        lines.append(f"| {name} | " + " | ".join(ratio(get(r), get(base)) for r in rows) + " |")
    checks = ", ".join(f"{r['documents']}: {'ok' if r['resume']['check']['ok'] else r['resume']['check']}"
                       for r in rows)
    lines.append(f"\nresume check (every document once, no duplicate rows): {checks}")
    return "\n".join(lines)


@contextlib.contextmanager
def workdir(keep: Optional[str]) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="bench_paper_scale_") as tmp:
            yield Path(tmp)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--arm", action="store_true", help="the paper CS arm, side by side with stage=plan")
    mode.add_argument("--growth", action="store_true", help="cost growth at 1x, 4x, 16x --documents")
    parser.add_argument("--documents", type=int, help="documents (--arm: 1400; --growth: the 1x size, 50)")
    parser.add_argument("--compression", type=float,
                        help="real latency / simulated latency (--arm: 8; --growth: 400)")
    parser.add_argument("--doc-chars", type=int, default=1000, help="characters per generated document")
    parser.add_argument("--docs-in-flight", type=int, help="generate.max_docs_in_flight (default: every document)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16], help="--growth: sizes, x --documents")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--workdir", help="keep corpora and run dirs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.documents is None:
        args.documents = 1400 if args.arm else 50
    if args.compression is None:
        args.compression = 8.0 if args.arm else 400.0
    with workdir(args.workdir) as work:
        if args.arm:
            result = {"arm": arm(args, work)}
            text = arm_table(result["arm"])
        else:
            result = {"growth": growth(args, work)}
            text = growth_table(result["growth"])
    print(text)
    result["markdown"] = text
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
