"""The generate loop's logic, driven by a scripted backend: acceptance edges, feedback
grouping, early exit, resume, malformed output, bad input."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from autodata.acceptance import FailureReason
from autodata.cache import ResponseCache
from autodata.config import DomainConfig, RootConfig
from autodata.corpus import CorpusError
from autodata.generate.stage import GenerateAborted, generate
from autodata.llm import LLM
from autodata.rundir import read_jsonl
from tests.scripted import cs_task, last_user, scripted_llm, verdicts
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
    # Both criteria are decided after two runs each (0, 0 cannot reach 0.5; 1, 1 cannot fall below 0.65).
    assert ex["weak_scores"] == [0.0, 0.0] and ex["strong_scores"] == [1.0, 1.0]
    assert ex["gap"] == 1.0 and ex["rounds_used"] == 1 and ex["method"] == "agentic"
    assert len(ex["rubric"]) == N and ex["question"] and ex["reference_answer"]
    assert stats["acceptance_rate"] == 1.0 and stats["mean_rounds_per_accepted"] == 1.0
    assert stats["per_role"]["judge"]["calls"] == 4 and stats["calls_saved_early_exit"] == 2


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
    assert stats["calls_saved_early_exit"] == 1 + 2  # round 2 accepts after two runs of each solver
    assert rows(tmp_path, "accepted.jsonl")[0]["rounds_used"] == 2


def test_failed_on_strong_exits_early_and_is_grouped(tmp_path):
    scenario = Scenario([{"weak": "BAD", "strong": "BAD"}, {"weak": "BAD", "strong": "GOOD"}])
    stats, _ = run(make_cfg(tmp_path), tmp_path, scenario)
    first = rows(tmp_path, "rounds.jsonl")[0]
    assert first["reason"] == FailureReason.FAILED_ON_STRONG
    # strong_min 0.65: after two zeros the best possible mean is 1/3.
    assert len(first["strong"]) == 2 and first["calls_saved"] == 1 + 1  # weak decided after 2 too
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
    assert len(round_keys) == len(set(round_keys)) == 6
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
    assert summary["generate/per_role/judge/calls"] == 8


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
    assert sum(r.schema_name == "loop_verdict" for r in backends["judge"].requests) == 1
