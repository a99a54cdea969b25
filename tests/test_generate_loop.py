"""The generate loop's logic, driven by a scripted backend: acceptance edges, feedback
grouping, early exit, resume, malformed output, bad input."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from autodata.acceptance import FailureReason
from autodata.backends.base import EndpointUnreachable
from autodata.cache import ResponseCache
from autodata.config import ROLES, AcceptanceConfig, DomainConfig, RootConfig
from autodata.corpus import CorpusError, Document
from autodata.generate import GenerateAborted, generate, score_documents
from autodata.llm import LLM
from autodata.rundir import read_jsonl
from tests.scripted import ScriptedBackend, cs_task, last_user, scripted_llm, verdicts
from tests.wandb_offline import read_run

N_POS, N_NEG = 8, 3
N = N_POS + N_NEG


def make_cfg(tmp_path: Path, n_docs: int = 1, **generate_overrides) -> RootConfig:
    cfg = RootConfig(stage="generate")
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for i in range(n_docs):
        (docs / f"doc{i}.md").write_text(f"Document {i}. " + "Boolean operators short-circuit in Python. " * 20)
    cfg.corpus.source = "folder"
    cfg.corpus.path = str(docs)
    cfg.progress = False
    cfg.generate.max_rounds = 3
    for key, value in generate_overrides.items():
        setattr(cfg.generate, key, value)
    return cfg


class Scenario:
    """Per-round behaviour: which solver answers well, and how the challenger/QV/judge behave.

    Rounds are counted per document (documents run one at a time in these tests).
    """

    def __init__(self, rounds: list[dict]):
        self.rounds = rounds
        self.challenger_prompts: list[str] = []
        self.rounds_of: dict[str, int] = {}
        self.current = ""

    def spec(self) -> dict:
        return self.rounds[min(self.rounds_of.get(self.current, 1), len(self.rounds)) - 1]

    def __call__(self, role: str, request, call: int):
        text = last_user(request)
        if role == "challenger":
            if "could not be used" not in text:
                self.challenger_prompts.append(text)
                self.current = re.search(r"Document \d+\.|Long document", text).group(0)
                self.rounds_of[self.current] = self.rounds_of.get(self.current, 0) + 1
            return self.spec().get("task", cs_task())
        spec = self.spec()
        if role == "quality_verifier":
            return json.dumps(spec.get("qv", {"verdict": "PASS", "feedback": "fine"}))
        if role == "weak_solver":
            return [spec["weak"]] * request.n
        if role == "strong_solver":
            return [spec["strong"]] * request.n
        if role == "judge":
            if spec.get("judge") == "garbage":
                return "I refuse to give JSON"
            if "GOOD" in text:
                return verdicts(N, N_POS, N_POS)
            if "HALF" in text:
                return verdicts(N, N_POS // 2, N_POS)
            return verdicts(N, 0, N_POS)
        if role == "feedback":
            return f"DIAGNOSIS-{len(self.challenger_prompts)}: the weak model solved it by pattern matching."
        raise AssertionError(role)


def run(cfg: RootConfig, tmp_path: Path, scenario, cache: ResponseCache | None = None):
    llm, backends = scripted_llm(cfg.models, scenario, cache=cache)
    stats = asyncio.run(generate(cfg, tmp_path / "run", llm=llm))
    return stats, backends


def rows(tmp_path: Path, name: str) -> list[dict]:
    return list(read_jsonl(tmp_path / "run" / name))


def test_accepts_when_strong_succeeds_and_weak_fails(tmp_path):
    stats, _ = run(make_cfg(tmp_path), tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))
    accepted = rows(tmp_path, "accepted.jsonl")
    assert len(accepted) == 1
    ex = accepted[0]
    # Both criteria pass after two runs each (0, 0 cannot reach 0.5; 1, 1 cannot fall below 0.65), but early exit
    # stops only on a rejection: the accepted row carries all 3 runs of each solver, as a CoT row does.
    assert ex["weak_scores"] == [0.0] * 3 and ex["strong_scores"] == [1.0] * 3
    assert ex["gap"] == 1.0 and ex["rounds_used"] == 1 and ex["method"] == "agentic"
    assert len(ex["rubric"]) == N and ex["question"] and ex["reference_answer"]
    assert stats["acceptance_rate"] == 1.0 and stats["mean_rounds_per_accepted"] == 1.0
    assert stats["per_role"]["judge"]["calls"] == 6 and stats["calls_saved_early_exit"] == 0


def test_without_early_exit_every_run_is_drawn(tmp_path):
    stats, _ = run(make_cfg(tmp_path, early_exit=False), tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))
    ex = rows(tmp_path, "accepted.jsonl")[0]
    assert ex["weak_scores"] == [0.0] * 3 and ex["strong_scores"] == [1.0] * 3
    assert stats["calls_saved_early_exit"] == 0


def test_too_easy_then_new_question_with_grouped_feedback(tmp_path):
    scenario = Scenario([{"weak": "GOOD", "strong": "GOOD"}, {"weak": "BAD", "strong": "GOOD"}])
    stats, backends = run(make_cfg(tmp_path), tmp_path, scenario)
    assert stats["accepted"] == 1 and stats["failure_reasons"] == {FailureReason.TOO_EASY: 1}
    second_prompt = scenario.challenger_prompts[1]
    assert "TOO EASY" in second_prompt and "DIAGNOSIS-1" in second_prompt
    assert "TOO EASY" not in scenario.challenger_prompts[0]
    first_round = rows(tmp_path, "rounds.jsonl")[0]
    # Two weak runs at 1.0 already make a mean < 0.5 impossible: the third is never drawn,
    # and the strong solver never runs because the weak criterion failed.
    assert len(first_round["weak"]) == 2 and first_round["calls_saved"] == 1
    assert first_round["strong"] == [] and first_round["strong_skipped"] == 3
    assert stats["calls_saved_early_exit"] == 1  # only the rejection saves calls: round 2 accepts with all runs
    assert rows(tmp_path, "accepted.jsonl")[0]["rounds_used"] == 2


def test_failed_on_strong_exits_early_and_is_grouped(tmp_path):
    scenario = Scenario([{"weak": "BAD", "strong": "BAD"}, {"weak": "BAD", "strong": "GOOD"}])
    stats, _ = run(make_cfg(tmp_path), tmp_path, scenario)
    first = rows(tmp_path, "rounds.jsonl")[0]
    assert first["reason"] == FailureReason.FAILED_ON_STRONG
    # strong_min 0.65: after two zeros the best possible mean is 1/3. The weak runs, which passed, are all drawn.
    assert len(first["weak"]) == 3 and len(first["strong"]) == 2 and first["calls_saved"] == 1
    assert "FAILED ON STRONG" in scenario.challenger_prompts[1]


def test_gap_edge_rejects_when_gap_too_small(tmp_path):
    # weak 0.5? No: HALF = 4 of 8 positive met = 0.5, which is not < 0.5 -> too easy at the edge.
    stats, _ = run(make_cfg(tmp_path, max_rounds=1), tmp_path, Scenario([{"weak": "HALF", "strong": "GOOD"}]))
    assert stats["accepted"] == 0 and stats["failure_reasons"] == {FailureReason.TOO_EASY: 1}
    assert "why_none_accepted" in stats and "too_easy" in stats["why_none_accepted"]


def test_structural_qv_failure_skips_llm_qv_and_is_grouped(tmp_path):
    recall = cs_task(question="What is the name of the operator that short-circuits?")
    scenario = Scenario([{"task": recall, "weak": "BAD", "strong": "GOOD"}, {"weak": "BAD", "strong": "GOOD"}])
    stats, backends = run(make_cfg(tmp_path), tmp_path, scenario)
    first = rows(tmp_path, "rounds.jsonl")[0]
    assert first["reason"] == FailureReason.FAILED_QV and first["structural_problems"]
    assert "FAILED QV" in scenario.challenger_prompts[1]
    assert len(backends["quality_verifier"].requests) == 1  # only round 2 reached the LLM verifier


def test_llm_qv_fail(tmp_path):
    scenario = Scenario([{"qv": {"verdict": "FAIL", "feedback": "leaks the answer"}, "weak": "BAD", "strong": "GOOD"}])
    stats, _ = run(make_cfg(tmp_path, max_rounds=1), tmp_path, scenario)
    assert stats["failure_reasons"] == {FailureReason.FAILED_QV: 1}
    assert rows(tmp_path, "rounds.jsonl")[0]["qv"] == {"passed": False, "feedback": "leaks the answer"}


def test_malformed_challenger_output_is_repaired_once_then_counted(tmp_path):
    scenario = Scenario([{"task": "no json here", "weak": "BAD", "strong": "GOOD"}, {"weak": "BAD", "strong": "GOOD"}])
    stats, backends = run(make_cfg(tmp_path), tmp_path, scenario)
    assert stats["failure_reasons"] == {FailureReason.MALFORMED: 1} and stats["accepted"] == 1
    first = rows(tmp_path, "rounds.jsonl")[0]
    challenger_calls = [c for c in first["calls"] if c["role"] == "challenger"]
    assert len(challenger_calls) == 1 and len(challenger_calls[0]["outputs"]) == 2  # answer + repair
    assert "could not be used" in backends["challenger"].requests[1].messages[-1]["content"]


def test_judge_garbage_is_excluded_not_scored_zero(tmp_path):
    stats, _ = run(make_cfg(tmp_path, max_rounds=1), tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD",
                                                                         "judge": "garbage"}]))
    first = rows(tmp_path, "rounds.jsonl")[0]
    assert all(run["score"] is None and run["judge_error"] for run in first["weak"])
    assert first["weak_mean"] is None and stats["judge_failures"] >= 1 and stats["accepted"] == 0


def test_cot_is_one_shot_and_records_solver_scores(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.method.name = "cot"
    scenario = Scenario([{"weak": "GOOD", "strong": "GOOD"}])
    stats, backends = run(cfg, tmp_path, scenario)
    ex = rows(tmp_path, "accepted.jsonl")[0]
    assert ex["method"] == "cot" and ex["rounds_used"] == 1
    assert ex["weak_scores"] == [1.0] * 3 and ex["strong_scores"] == [1.0] * 3  # too easy, kept anyway
    assert len(backends["challenger"].requests) == 1
    assert len(backends["feedback"].requests) == 0


def test_resume_after_kill_redoes_nothing_and_duplicates_nothing(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=3, max_docs_in_flight=1)
    run_dir = tmp_path / "run"
    cache_path = run_dir / "cache.sqlite"
    run_dir.mkdir()

    class Killed(BaseException):
        pass

    base = Scenario([{"weak": "GOOD", "strong": "GOOD"}, {"weak": "BAD", "strong": "GOOD"}])
    seen = {"doc1_challenger": 0}

    def killer(role, request, call):
        if role == "challenger" and "Document 1." in last_user(request):
            seen["doc1_challenger"] += 1
            if seen["doc1_challenger"] == 2:  # the second document's second round: kill mid-document
                raise Killed()
        return base(role, request, call)

    cache = ResponseCache(cache_path)
    llm, first_backends = scripted_llm(cfg.models, killer, cache=cache)
    with pytest.raises(Killed):
        asyncio.run(generate(cfg, run_dir, llm=llm))
    cache.close()
    # A kill can tear the last line being written.
    with (run_dir / "rounds.jsonl").open("a") as fh:
        fh.write('{"document_id": "doc1", "rou')
    finished_before = {r["document_id"] for r in read_jsonl(run_dir / "documents.jsonl")}
    assert finished_before == {"doc0"}

    cache = ResponseCache(cache_path)
    paid_before = len(cache)
    second = Scenario([{"weak": "GOOD", "strong": "GOOD"}, {"weak": "BAD", "strong": "GOOD"}])
    llm, backends = scripted_llm(cfg.models, second, cache=cache)
    stats = asyncio.run(generate(cfg, run_dir, llm=llm))
    ledger = list(read_jsonl(run_dir / "documents.jsonl"))
    assert sorted(r["document_id"] for r in ledger) == ["doc0", "doc1", "doc2"]
    accepted = list(read_jsonl(run_dir / "accepted.jsonl"))
    assert sorted(r["document_id"] for r in accepted) == ["doc0", "doc1", "doc2"]
    round_keys = [(r["document_id"], r["round"]) for r in read_jsonl(run_dir / "rounds.jsonl")]
    # doc0 and doc2 take 2 rounds; doc1's redone round 1 comes from the cache, so the scenario sees its round 2 as
    # a first round (too easy) and round 3 accepts
    assert len(round_keys) == len(set(round_keys)) == 7
    # doc0 was finished: none of its prompts reach a model again.
    assert not any("Document 0." in m["content"] for b in backends.values() for req in b.requests for m in req.messages)
    # Calls completed before the kill are served from the cache: the second run pays only for new ones.
    total_requests = sum(len(b.requests) for b in backends.values())
    assert paid_before > 0 and len(cache) == paid_before + total_requests
    assert stats["accepted"] == 3
    cache.close()


def test_unreachable_endpoint_names_the_url(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.models.backend = "openai"
    cfg.models.model = "m"
    cfg.models.base_url = "http://127.0.0.1:9/v1"
    cfg.models.default.max_retries = 1
    cfg.models.default.timeout_s = 2

    async def attempt():
        llm = LLM(cfg.models)
        try:
            await generate(cfg, tmp_path / "run", llm=llm)
        finally:
            await llm.aclose()

    with pytest.raises(GenerateAborted, match=r"127\.0\.0\.1:9"):
        asyncio.run(attempt())


def test_empty_corpus_is_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=0)
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG\x00\x00binary")
    with pytest.raises(CorpusError, match="corpus is empty"):
        run(cfg, tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))


def test_non_text_file_is_skipped_and_long_document_truncated(tmp_path, caplog):
    cfg = make_cfg(tmp_path, n_docs=1, max_rounds=1)
    (tmp_path / "docs" / "blob.txt").write_bytes(b"\x00\x01\x02 not text")
    (tmp_path / "docs" / "long.md").write_text("Long document about evaluation order. " * 2000)
    cfg.models.default.max_document_tokens = 100
    stats, backends = run(cfg, tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))
    assert "blob.txt" in caplog.text and "not text" in caplog.text.lower() or "binary" in caplog.text
    long_rows = [r for r in rows(tmp_path, "rounds.jsonl") if r["document_id"] == "long"]
    assert long_rows and "truncated" in long_rows[0]["warnings"][0]
    assert stats["documents"] == 2 and stats["documents_truncated"] >= 1
    assert all(len(m["content"]) < 5000 for req in backends["challenger"].requests for m in req.messages)


def test_structural_checks_can_be_turned_off(tmp_path):
    recall = cs_task(question="What is the name of the operator that short-circuits?")
    cfg = make_cfg(tmp_path, max_rounds=1)
    cfg.domain.structural_checks = False
    stats, backends = run(cfg, tmp_path, Scenario([{"task": recall, "weak": "BAD", "strong": "GOOD"}]))
    assert stats["accepted"] == 1 and len(backends["quality_verifier"].requests) == 1


def test_generate_logs_progress_and_stats_to_an_offline_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(tmp_path, n_docs=2)
    cfg.logger = "wandb"
    run(cfg, tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))

    summary, history = read_run(tmp_path / "run")
    assert [h["generate/docs_done"] for h in history if "generate/docs_done" in h] == [1, 2]
    assert summary["generate/accepted"] == 2 and summary["generate/acceptance_rate"] == 1.0
    assert summary["generate/mean_rounds_per_accepted"] == 1.0
    assert summary["generate/per_role/judge/calls"] == 12


@pytest.mark.parametrize("strong,kept", [("GOOD", True), ("HALF", False)])
def test_cot_rip_filter_keeps_a_task_only_when_every_strong_run_scores_high(tmp_path, strong, kept):
    cfg = make_cfg(tmp_path)
    cfg.method.name, cfg.method.cot_filter, cfg.method.rip_min_score = "cot", "rip", 0.75
    stats, _ = run(cfg, tmp_path, Scenario([{"weak": "BAD", "strong": strong}]))
    assert len(rows(tmp_path, "accepted.jsonl")) == int(kept)
    if not kept:
        assert stats["failure_reasons"] == {FailureReason.LOW_MIN_SCORE: 1}
        (rnd,) = rows(tmp_path, "rounds.jsonl")
        assert "lowest strong-run score 0.500 < method.rip_min_score 0.75" in rnd["detail"]


@pytest.mark.parametrize("right_runs,kept", [(2, True), (1, False)])
def test_cot_answer_consistency_needs_a_majority_of_strong_runs_to_agree(tmp_path, right_runs, kept):
    from tests.test_domains import PRINCIPIA_TASK

    cfg = make_cfg(tmp_path)
    cfg.method.name, cfg.method.cot_filter = "cot", "answer_consistency"
    cfg.domain = DomainConfig(name="principia", recall_openers=[])
    strong = ["powers of two"] * right_runs + ["all primes"] * (3 - right_runs)

    def script(role, request, call):
        if role == "challenger":
            return json.dumps(PRINCIPIA_TASK)
        if role == "quality_verifier":
            return json.dumps({"verdict": "PASS", "feedback": "fine"})
        if role == "weak_solver":
            return ["all primes"] * request.n
        if role == "strong_solver":
            return strong[:request.n] if request.n == 3 else [strong.pop(0) for _ in range(request.n)]
        if role == "judge":
            answer = last_user(request).split("<answer>\n", 1)[1].split("\n</answer>", 1)[0]
            return json.dumps({"reason": "compared", "equivalent": answer == "powers of two"})
        raise AssertionError(role)

    stats, _ = run(cfg, tmp_path, script)
    assert len(rows(tmp_path, "accepted.jsonl")) == int(kept)
    if not kept:
        assert stats["failure_reasons"] == {FailureReason.INCONSISTENT_ANSWER: 1}
        assert "1 of 3 graded strong runs agree" in rows(tmp_path, "rounds.jsonl")[0]["detail"]


def test_cot_filters_are_validated():
    from autodata.validation import ConfigError, validate

    cfg = RootConfig(stage="generate")
    cfg.method.cot_filter = "answer_consistency"
    cfg.method.score_solvers = False
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert "applies to method=cot only" in text and "method.score_solvers is false" in text
    assert "domain=cs is rubric-graded" in text


def test_cot_records_the_legal_loop_judges_suitability_without_filtering(tmp_path):
    from tests.test_domains import LEGAL_TASK, PRESETS

    cfg = make_cfg(tmp_path)
    cfg.method.name = "cot"
    cfg.domain = PRESETS["legal"]
    verdict = {"weak_pattern": "misses the scope rule", "strong_pattern": "applies it", "gap_interpretation": "none",
               "rubric_concerns": "none", "grpo_suitability": "low", "verdict": "improve",
               "verdict_reason": "no gap", "suggestion_for_writer": ""}

    def script(role, request, call):
        if role == "challenger":
            if request.schema_name == "suitability":
                return json.dumps({"reason": "states a rule of law", "suitable": True})
            return json.dumps(LEGAL_TASK)
        if role == "quality_verifier":
            return json.dumps({"verdict": "PASS", "feedback": "fine"})
        if role in ("weak_solver", "strong_solver"):
            return ["an answer"] * request.n
        if role == "judge":
            if request.schema_name == "loop_verdict":
                return json.dumps(verdict)
            n = len(LEGAL_TASK["rubric"])
            return json.dumps({"verdicts": [{"id": i + 1, "met": i == 0} for i in range(n)]})
        raise AssertionError(role)

    stats, backends = run(cfg, tmp_path, script)
    (row,) = rows(tmp_path, "accepted.jsonl")
    # Kept although the loop judge says improve: CoT has no feedback loop; the verdict is data for the report
    assert row["loop_judge"]["grpo_suitability"] == "low" and row["loop_judge"]["verdict"] == "improve"
    # The agentic loop would have asked for an improved task: legal's verdict is the loop judge's
    (rnd,) = [r for r in rows(tmp_path, "rounds.jsonl") if r["round"] == 1]
    assert rnd["would_pass_agentic"] is False
    assert sum(r.schema_name == "loop_verdict" for r in backends["judge"].requests) == 1


# ---------------------------------------------------------------- early exit keeps accepted rows whole
def test_early_exit_never_shortens_an_accepted_row(tmp_path):
    # weak [0, 0] of 3 already passes the weak criterion (the mean cannot reach 0.5) after one wave of two; the
    # accepted row still has 3 weak and 3 strong runs, and an accepted round saves no calls.
    stats, backends = run(make_cfg(tmp_path, solver_wave=2), tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))
    (ex,) = rows(tmp_path, "accepted.jsonl")
    assert len(ex["weak_scores"]) == 3 and len(ex["strong_scores"]) == 3
    (rnd,) = rows(tmp_path, "rounds.jsonl")
    assert len(rnd["weak"]) == 3 and rnd["calls_saved"] == 0 and stats["calls_saved_early_exit"] == 0
    assert [r.n for r in backends["weak_solver"].requests] == [2, 1]


# ---------------------------------------------------------------- legal: the loop judge decides
def legal_script(verdict: str, question: str | None = None):
    """Legal scenario: weak runs meet 3 of 14 positive criteria (0.214), strong runs 5 (0.357): gap 0.143."""
    from tests.test_domains import LEGAL_TASK

    task = dict(LEGAL_TASK, question=question or LEGAL_TASK["question"])
    n = len(task["rubric"])

    def script(role, request, call):
        text = last_user(request)
        if role == "challenger":
            if request.schema_name == "suitability":
                return json.dumps({"reason": "states a rule of law", "suitable": True})
            return json.dumps(task)
        if role == "quality_verifier":
            return json.dumps({"verdict": "PASS", "feedback": "fine"})
        if role in ("weak_solver", "strong_solver"):
            return [f"{role} answer"] * request.n
        if role == "judge":
            if request.schema_name == "loop_verdict":
                return json.dumps({"weak_pattern": "misses the scope rule", "strong_pattern": "applies it",
                                   "gap_interpretation": "real", "rubric_concerns": "none",
                                   "grpo_suitability": "high", "verdict": verdict, "verdict_reason": "judged",
                                   "suggestion_for_writer": "change the facts"})
            met = 5 if "strong_solver answer" in text else 3
            return json.dumps({"verdicts": [{"id": i + 1, "met": i < met} for i in range(n)]})
        if role == "feedback":
            return "DIAGNOSIS"
        raise AssertionError(role)

    return script


def legal_cfg(tmp_path: Path, policy: str) -> RootConfig:
    from tests.test_domains import PRESETS

    cfg = make_cfg(tmp_path, max_rounds=1, weak_samples=5)
    cfg.domain = replace(PRESETS["legal"], acceptance=AcceptanceConfig(policy=policy))
    return cfg


def test_legal_task_with_a_small_gap_is_the_loop_judges_to_accept(tmp_path):
    stats, backends = run(legal_cfg(tmp_path, "loop_judge"), tmp_path, legal_script("accept"))
    (ex,) = rows(tmp_path, "accepted.jsonl")
    assert abs(ex["gap"] - 2 * 6 / 84) < 1e-9 and ex["loop_judge"]["verdict"] == "accept"
    # The judge read every rollout: 5 weak and 3 strong
    (request,) = [r for r in backends["judge"].requests if r.schema_name == "loop_verdict"]
    prompt = last_user(request)
    assert prompt.count("weak_solver answer") == 5 and prompt.count("strong_solver answer") == 3
    assert len(ex["weak_scores"]) == 5 and len(ex["strong_scores"]) == 3


def test_legal_gap_gate_is_an_option_and_rejects_the_same_task_unseen(tmp_path):
    stats, backends = run(legal_cfg(tmp_path, "legal_gap"), tmp_path, legal_script("accept"))
    assert stats["accepted"] == 0 and stats["failure_reasons"] == {FailureReason.FAILED_ON_STRONG: 1}
    assert not any(r.schema_name == "loop_verdict" for r in backends["judge"].requests)


def test_legal_improve_verdict_and_hard_rules_reject(tmp_path):
    stats, _ = run(legal_cfg(tmp_path, "loop_judge"), tmp_path, legal_script("improve"))
    (rnd,) = rows(tmp_path, "rounds.jsonl")[1:]  # after the extractor's round 0
    assert rnd["reason"] == FailureReason.LOOP_JUDGE_IMPROVE and "change the facts" in rnd["detail"]

    # A case recap forces improve although the judge says accept, with the framework's structural checks off.
    recap = ("In Smith v. Jones the court held a search like mine invalid. Officers searched my bedroom with a "
             "warrant for my garage; can I get the laptop evidence thrown out?")
    (tmp_path / "recap").mkdir()
    cfg = legal_cfg(tmp_path / "recap", "loop_judge")
    cfg.domain.structural_checks = False
    stats, _ = run(cfg, tmp_path / "recap", legal_script("accept", question=recap))
    (rnd,) = rows(tmp_path / "recap", "rounds.jsonl")[1:]
    assert rnd["reason"] == FailureReason.LOOP_JUDGE_IMPROVE and "hard rule" in rnd["detail"]
    assert "case recap" in rnd["detail"] and stats["accepted"] == 0


def test_challengers_per_round_must_be_positive_when_set():
    from autodata.validation import ConfigError, validate

    cfg = RootConfig(stage="generate")
    cfg.generate.challengers_per_round = 0
    with pytest.raises(ConfigError, match=r"generate.challengers_per_round \(0\) must be > 0"):
        validate(cfg)


def test_a_loop_judge_policy_needs_a_domain_with_a_loop_judge():
    from autodata.validation import ConfigError, validate

    cfg = RootConfig(stage="generate")
    cfg.domain.acceptance.policy = "loop_judge"
    cfg.domain.acceptance.require_loop_judge_accept = False
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert "domain=cs has none" in text and "require_loop_judge_accept (False) must be true" in text


# ---------------------------------------------------------------- privileged access of the strong solver
@pytest.mark.parametrize("sees", [False, True])
def test_strong_solver_sees_the_document_only_when_asked(tmp_path, sees):
    cfg = make_cfg(tmp_path) if not sees else make_cfg(tmp_path, strong_sees_document=True)
    stats, backends = run(cfg, tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))
    strong_prompt = " ".join(m["content"] for m in backends["strong_solver"].requests[0].messages)
    assert ("Boolean operators short-circuit in Python." in strong_prompt) is sees
    assert stats["strong_sees_document"] is sees
    weak_prompt = " ".join(m["content"] for m in backends["weak_solver"].requests[0].messages)
    assert "Boolean operators short-circuit in Python." not in weak_prompt


# ---------------------------------------------------------------- several challengers per round
def principia_script(qv_verdicts: list[str], delays: dict[int, float] | None = None):
    """Principia: challenger number i (told apart by its seed) gets QV verdict qv_verdicts[i]."""
    from autodata.llm import derive_seed
    from tests.test_domains import PRINCIPIA_TASK

    seeds = {derive_seed(0, f"agentic/doc0/r{rnd}/challenger{f'/{i}' if i else ''}/json0"): i
             for i in range(len(qv_verdicts)) for rnd in (1, 2)}

    def script(role, request, call):
        text = last_user(request)
        if role == "challenger":
            i = seeds[request.sampling.seed]
            return json.dumps(dict(PRINCIPIA_TASK, question=f"{PRINCIPIA_TASK['question']} (writer {i})"))
        if role == "quality_verifier":
            i = int(re.search(r"\(writer (\d)\)", text).group(1))
            return json.dumps({"verdict": qv_verdicts[i], "feedback": f"verdict for writer {i}"})
        if role == "weak_solver":
            return ["all primes"] * request.n
        if role == "strong_solver":
            return ["powers of two"] * request.n
        if role == "judge":
            answer = text.split("<answer>\n", 1)[1].split("\n</answer>", 1)[0]
            return json.dumps({"reason": "compared", "equivalent": answer == "powers of two"})
        raise AssertionError(role)

    return script


class SlowFirstWriter:
    """Delays writer 0's QV answer, so writer 1 would win a race: the round must still take the lowest index."""

    def __init__(self, backend):
        self.inner = backend

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def complete(self, request):
        if "(writer 0)" in last_user(request):
            await asyncio.sleep(0.2)
        return await self.inner.complete(request)


def principia_cfg(tmp_path: Path, **generate) -> RootConfig:
    cfg = make_cfg(tmp_path, **{"max_rounds": 1, "weak_samples": 4, "strong_samples": 4, **generate})
    cfg.domain = DomainConfig(name="principia", recall_openers=[], acceptance=AcceptanceConfig(policy="verifiable"))
    return cfg


@pytest.mark.parametrize("verdicts,chosen", [(["FAIL", "PASS", "PASS"], 1), (["PASS", "PASS", "FAIL"], 0)])
def test_principia_runs_three_challengers_and_takes_the_lowest_that_passes(tmp_path, verdicts, chosen):
    cfg = principia_cfg(tmp_path)
    llm, backends = scripted_llm(cfg.models, principia_script(verdicts))
    llm.backends["quality_verifier"] = SlowFirstWriter(backends["quality_verifier"])
    stats = asyncio.run(generate(cfg, tmp_path / "run", llm=llm))
    assert len(backends["challenger"].requests) == 3 and stats["challengers_per_round"] == 3
    (ex,) = rows(tmp_path, "accepted.jsonl")
    assert ex["question"].endswith(f"(writer {chosen})")
    (rnd,) = rows(tmp_path, "rounds.jsonl")
    assert rnd["challenger_index"] == chosen and [c["passed"] for c in rnd["challengers"]] == [
        v == "PASS" for v in verdicts]
    # Writers 1 and 2 made one challenger call and one QV call each: the cost of three writers over one
    assert rnd["calls_extra_challengers"] == 4 and stats["calls_extra_challengers"] == 4
    # The round's log lists the candidates' calls in index order, whatever order they finished in
    steps = [c["step"] for c in rnd["calls"] if c["role"] in ("challenger", "quality_verifier")]
    assert steps == ["challenger", "qv", "challenger/1", "qv/1", "challenger/2", "qv/2"]


def test_when_no_challenger_passes_every_failure_is_feedback(tmp_path):
    cfg = principia_cfg(tmp_path, max_rounds=2)
    llm, backends = scripted_llm(cfg.models, principia_script(["FAIL", "FAIL", "FAIL"]))
    stats = asyncio.run(generate(cfg, tmp_path / "run", llm=llm))
    assert stats["accepted"] == 0 and stats["failure_reasons"] == {FailureReason.FAILED_QV: 2}
    first = rows(tmp_path, "rounds.jsonl")[0]
    assert first["challenger_index"] is None and first["detail"] == "verdict for writer 0"
    # Round 2's writers hear about all three failed tasks of round 1
    second_prompt = last_user(backends["challenger"].requests[3])
    assert all(f"verdict for writer {i}" in second_prompt for i in range(3))


def test_one_challenger_per_round_is_the_default_outside_principia(tmp_path):
    stats, backends = run(make_cfg(tmp_path), tmp_path, Scenario([{"weak": "BAD", "strong": "GOOD"}]))
    assert len(backends["challenger"].requests) == 1 and stats["challengers_per_round"] == 1
    (rnd,) = rows(tmp_path, "rounds.jsonl")
    assert "challengers" not in rnd and stats["calls_extra_challengers"] == 0


def test_challengers_per_round_overrides_the_domain_default(tmp_path):
    cfg = principia_cfg(tmp_path, challengers_per_round=1)
    llm, backends = scripted_llm(cfg.models, principia_script(["PASS"]))
    stats = asyncio.run(generate(cfg, tmp_path / "run", llm=llm))
    assert len(backends["challenger"].requests) == 1 and stats["accepted"] == 1


# ---------------------------------------------------------------- failure shares, the paper's way
def test_failure_shares_are_of_the_rounds_before_acceptance():
    from autodata.generate.outputs import compute_stats

    def rejected(doc, rnd, reason):
        return {"document_id": doc, "round": rnd, "status": "rejected", "reason": reason}

    rounds = [
        rejected("a", 1, "too_easy"), rejected("a", 2, "too_easy"), rejected("a", 3, "failed_on_strong"),
        {"document_id": "a", "round": 4, "status": "accepted", "reason": None},
        # b never produced a task: its rounds are not "before acceptance"
        rejected("b", 1, "failed_on_strong"), rejected("b", 2, "failed_on_strong"), rejected("b", 3, "failed_qv"),
        rejected("c", 0, "unsuitable"),
    ]
    accepted = [{"document_id": "a", "rounds_used": 4, "weak_mean": 0.1, "strong_mean": 0.9, "gap": 0.8}]
    stats = compute_stats(rounds, [], accepted, n_docs=3)
    assert stats["rounds_before_acceptance"] == 3
    assert stats["failure_reasons_before_acceptance"] == {"too_easy": 2, "failed_on_strong": 1}
    assert stats["failure_reason_shares"] == {"too_easy": 2 / 3, "failed_on_strong": 1 / 3}
    # The count of every rejected round, under its own name
    assert stats["failure_reason_shares_all_rounds"] == {"too_easy": 2 / 7, "failed_on_strong": 3 / 7,
                                                         "failed_qv": 1 / 7, "unsuitable": 1 / 7}
    assert stats["failure_reasons"]["failed_on_strong"] == 3


def test_documents_truncated_counts_documents_and_error_rows_are_not_finished():
    from autodata.generate.outputs import compute_stats

    cut = ["document truncated from 9000 to 1280 characters (~320 tokens)"]
    rounds = [{"document_id": "a", "round": r, "status": "rejected", "reason": "too_easy", "warnings": cut}
              for r in (1, 2, 3)] + [{"document_id": "b", "round": 1, "status": "rejected", "reason": "too_easy"}]
    ledger = [{"document_id": "a", "status": "exhausted"}, {"document_id": "b", "status": "error", "reason": "x"}]
    stats = compute_stats(rounds, ledger, [], n_docs=2)
    assert stats["documents_truncated"] == 1
    assert stats["document_errors"] == 1 and stats["documents_finished"] == 1


class Closing(ScriptedBackend):
    """A scripted backend that counts its closes; ``fail`` makes the endpoint probe or a document's call fail."""

    def __init__(self, role, script, fail=None):
        super().__init__(role, script)
        self.fail = fail
        self.closed = 0

    async def check(self):
        if self.fail == "probe":
            raise EndpointUnreachable(f"{self.name}: connection refused")

    async def complete(self, request):
        if self.fail == "document":
            raise EndpointUnreachable(f"{self.name}: connection refused")
        return await super().complete(request)

    async def aclose(self):
        self.closed += 1


@pytest.mark.parametrize("fail", [None, "probe", "document"])
def test_the_stage_closes_the_llm_and_cache_it_opened_once_whether_it_ends_or_fails(tmp_path, monkeypatch, fail):
    import autodata.generate.stage as stage

    backends = {role: Closing(role, Scenario([{"weak": "BAD", "strong": "GOOD"}]), fail) for role in ROLES}
    monkeypatch.setattr(stage, "LLM", lambda models, cache, seed: LLM(models, cache=cache, seed=seed,
                                                                      backends=backends))
    caches = []

    class Cache(ResponseCache):
        def close(self):
            caches.append(self)
            super().close()

    monkeypatch.setattr(stage, "ResponseCache", Cache)
    cfg = make_cfg(tmp_path)
    if fail is None:
        assert asyncio.run(generate(cfg, tmp_path / "run"))["accepted"] == 1
    else:
        with pytest.raises(GenerateAborted, match="connection refused"):
            asyncio.run(generate(cfg, tmp_path / "run"))
    assert [b.closed for b in backends.values()] == [1] * len(ROLES)
    assert len(caches) == 1
    # Nothing was finished when the endpoint failed: a rerun starts the document again
    assert len(rows(tmp_path, "documents.jsonl")) == (1 if fail is None else 0)


def test_score_documents_runs_the_given_documents_without_export_and_leaves_the_llm_open(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=3)
    doc = Document(id="given", text="Document 9. " + "Boolean operators short-circuit in Python. " * 20,
                   source="test")
    backends = {role: Closing(role, Scenario([{"weak": "BAD", "strong": "GOOD"}])) for role in ROLES}
    llm = LLM(cfg.models, backends=backends)
    stats = asyncio.run(score_documents(cfg, tmp_path / "run", [doc], llm))
    assert stats["documents"] == 1 and stats["accepted"] == 1
    assert [r["document_id"] for r in rows(tmp_path, "documents.jsonl")] == ["given"]
    assert (tmp_path / "run" / "stats.json").exists() and not (tmp_path / "run" / "dataset").exists()
    assert not any(b.closed for b in backends.values())
    # Resumable like the stage: the finished document asks no model again
    asked = sum(len(b.requests) for b in backends.values())
    assert asyncio.run(score_documents(cfg, tmp_path / "run", [doc], llm))["accepted"] == 1
    assert sum(len(b.requests) for b in backends.values()) == asked


def test_the_package_exports_the_stage_api_without_importing_the_stage():
    import subprocess
    import sys

    code = ("import sys, autodata.generate as g; assert 'autodata.generate.stage' not in sys.modules; "
            "from autodata.generate import score_documents, GenerateAborted, generate, run; "
            "import autodata.generate.stage as s; assert score_documents is s.score_documents and run is s.run")
    subprocess.run([sys.executable, "-c", code], check=True)
