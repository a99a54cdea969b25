"""benchmarks/bench_paper_scale.py: the paper world's decisions meet the real cs domain and acceptance policy, the
corpus has the paper's rounds, the report's arithmetic, and one tiny run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_paper_scale as bench  # noqa: E402
import paper_world_server as world  # noqa: E402
from make_corpus import draw_rounds, make_corpus  # noqa: E402

from autodata.acceptance import FailureReason, Status  # noqa: E402
from autodata.config import CorpusConfig, DomainConfig, GenerateConfig  # noqa: E402
from autodata.corpus import load_corpus  # noqa: E402
from autodata.domains.base import FailedAttempt  # noqa: E402
from autodata.domains.cs import CSDomain  # noqa: E402


@pytest.fixture(scope="module")
def domain() -> CSDomain:
    return CSDomain(DomainConfig())


def _task(domain, doc_text, history=()):
    prompt = world.user_text(domain.challenger_messages(doc_text, list(history), "agentic", GenerateConfig()))
    return domain.parse_task(world.challenger_task(prompt))


def _score(domain, task, side):
    prompt = world.user_text(domain.judge_messages(task, f"ANSWER {side} abc: the queue becomes the bound."))
    return domain.parse_grade(task, world.judge_verdicts(prompt)).score


def test_corpus_has_the_papers_mean_rounds_and_loads_as_jsonl(tmp_path):
    rounds = make_corpus(tmp_path / "c.jsonl", 50, doc_chars=400)
    assert sum(rounds) == round(6.59 * 50) and 1 <= min(rounds) and max(rounds) <= 10
    assert rounds == draw_rounds(50), "the draw is seeded: the same corpus every time"
    docs, skipped = load_corpus(CorpusConfig(source="jsonl", path=str(tmp_path / "c.jsonl")))
    assert len(docs) == 50 and skipped == {"too_short": 0, "duplicate_id": 0}
    assert docs[3].text.startswith(f"PAPERWORLD-DOC id={docs[3].id} rounds={rounds[3]}")


def test_challenger_task_passes_the_cs_checks_and_counts_attempts(domain):
    doc = "PAPERWORLD-DOC id=doc-000007 rounds=4\n" + "the queue and the replica. " * 40
    first = _task(domain, doc)
    assert domain.structural_problems(first, doc) == []
    assert world.QUESTION_MARKER.match(first.question).groups()[1:] == ("4", "0")
    history = [FailedAttempt(1, FailureReason.TOO_EASY, first.question, "too easy " * 100, 1.0, None),
               FailedAttempt(2, FailureReason.FAILED_ON_STRONG, "x" * 20 + first.question, "hard", 0.0, 0.0)]
    third = _task(domain, doc, history)
    assert world.QUESTION_MARKER.match(third.question).group(3) == "2"
    assert third.question != first.question


def test_judge_accepts_at_the_documents_round_and_rejects_before(domain):
    policy = domain.policy
    doc = "PAPERWORLD-DOC id=d1 rounds=1\n" + "the cache. " * 40
    task = _task(domain, doc)
    weak, strong = _score(domain, task, "weak"), _score(domain, task, "strong")
    assert (weak, strong) == (0.0, 1.0)
    assert policy.decide([weak] * 3, [strong] * 3).accepted
    # Rounds before the document's: too easy (early exit after 2 weak runs) or failed on strong
    seen = set()
    for i in range(12):
        task = _task(domain, f"PAPERWORLD-DOC id=d{i} rounds=5\n" + "the cache. " * 40)
        weak, strong = _score(domain, task, "weak"), _score(domain, task, "strong")
        if weak == 1.0:
            assert policy.weak_status([weak, weak], 3) is Status.FAIL
            seen.add("too_easy")
        else:
            assert (weak, strong) == (0.0, 0.0) and not policy.decide([0.0] * 3, [0.0] * 3).accepted
            seen.add("failed_on_strong")
    assert seen == {"too_easy", "failed_on_strong"}
    # 80/20 by a hash of the question id
    too_easy = sum(world.passes(f"q{i}", 5, 0, "weak") for i in range(2000))
    assert 0.77 < too_easy / 2000 < 0.83


def test_tracker_busy_integral():
    tracker = world.Tracker()
    tracker.done = [(0.0, 4.0), (2.0, 6.0)]
    tracker.open = {7: 5.0}
    # [2, 6]: 2 + 4 seconds finished, plus the open request from 5 to now=6
    assert tracker.busy_seconds(2.0, 6.0, now=6.0) == pytest.approx(7.0)
    assert tracker.busy_seconds(10.0, 12.0, now=6.0) == 0.0


def test_arm_table_arithmetic():
    roles = {r: {"calls": 100.0, "busy_share": 1.0 if r == "strong_solver" else 0.5} for r in world.ROLES}
    sim = {"per_role_calls": {r: 90 for r in world.ROLES}, "busy_steady": {r: 0.95 for r in world.ROLES},
           "busy_whole": {r: 0.8 for r in world.ROLES}, "busy_bins": {"strong_solver": [1.0] * 10},
           "documents": 10, "rounds": 66, "accepted": 10, "mean_rounds_per_accepted": 6.6, "work_span_s": 360.0,
           "wall_s": 370.0, "longest_chain_real_s": 3600.0, "cpu_s": 10.0, "calls": 1000, "cpu_ms_per_call": 10.0,
           "peak_rss_mb": 200.0, "peak_in_flight": {"judge": 5}, "sizes": {"rounds.jsonl": 2_000_000}}
    plan = {"roles": roles, "model": {"rounds": 65.9},
            "fleet": {"wall_hours": 1.0, "bottleneck": "strong_solver", "orchestrator_calls_per_s": 1600}}
    text = bench.arm_table({"simulated": sim, "plan": plan, "compression": 10.0})
    assert "| strong_solver | 100 | 90 | -10.0% | 100% | 95% / 80% |" in text
    # 360 s x 10 = 1 h, the planned wall
    assert "= 1.00 h vs planned 1.00 h (+0.0%)" in text
    assert "100 calls per CPU second" in text


def test_tiny_run_end_to_end(tmp_path):
    """Six documents through the real generate process: every document accepted at its round, servers counted."""
    corpus = tmp_path / "corpus.jsonl"
    rounds = make_corpus(corpus, 6, doc_chars=300, mean=3.0, max_rounds=5)
    with bench.World(compression=4000) as w:
        sim = bench.simulate(w, corpus, tmp_path / "run", 6, 6)
    assert sim["accepted"] == 6 and sim["rounds"] == sum(rounds)
    assert sim["server_requests"] == sim["per_role_calls"], "every call the run recorded reached its server once"
    assert sim["sizes"]["rounds.jsonl"] > 0 and sim["peak_rss_mb"] > 0 and sim["cpu_ms_per_call"] > 0
    assert sim["longest_chain_real_s"] >= max(rounds) * bench.REAL_LATENCY_S["challenger"]
    json.dumps(sim)
