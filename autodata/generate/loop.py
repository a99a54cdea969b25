"""The per-document loops: Agentic Self-Instruct and the CoT Self-Instruct baseline.

Agentic, per document and round:
challenger -> framework structural checks -> quality verifier -> weak solver
(k runs, early exit) -> only if the weak criterion holds, strong solver (k runs,
early exit) -> judge every answer -> accept, or a diagnosis from the feedback
writer and a new round whose challenger prompt groups earlier failures as
TOO EASY / FAILED ON STRONG / FAILED QV.

The acceptance decision is computed by ``domain.policy`` from the judge's
per-criterion verdicts (or equivalence counts); no model's say-so can accept a
task. A legal loop judge can only veto.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from autodata.acceptance import Decision, FailureReason, Status
from autodata.backends.base import EndpointUnreachable
from autodata.config import MethodConfig, RootConfig
from autodata.corpus import Document
from autodata.domains.base import Domain, FailedAttempt, Grade, Task
from autodata.generate.recorder import RoundRecorder
from autodata.llm import LLM

log = logging.getLogger(__name__)

# Rough characters per token, used to cap documents for endpoints without a local tokenizer.
CHARS_PER_TOKEN = 4
DIAGNOSIS_MAX_CHARS = 800


@dataclass
class SolverRun:
    answer: str
    finish_reason: str
    grade: Optional[Grade]
    judge_error: Optional[str] = None

    def row(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "finish_reason": self.finish_reason,
            "score": self.grade.score if self.grade else None,
            "met": self.grade.met if self.grade else None,
            "correct": self.grade.correct if self.grade else None,
            "judge_error": self.judge_error,
        }


@dataclass
class SolverResult:
    runs: list[SolverRun] = field(default_factory=list)
    status: Status = Status.UNDECIDED
    # Samples (and their judge calls) not drawn because the criterion was already decided
    saved: int = 0

    @property
    def scores(self) -> list[float]:
        return [r.grade.score for r in self.runs if r.grade is not None]

    @property
    def judge_failures(self) -> int:
        return sum(1 for r in self.runs if r.grade is None)


@dataclass
class DocOutcome:
    doc_id: str
    status: str  # accepted | exhausted | rejected | unsuitable
    rounds_used: int
    example: Optional[dict[str, Any]] = None
    reason: Optional[str] = None


def mean(scores: list[float]) -> Optional[float]:
    """Mean of the graded runs; None when none was graded (never a fake 0)."""
    return sum(scores) / len(scores) if scores else None


def truncate_document(text: str, max_tokens: int) -> tuple[str, Optional[str]]:
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text, None
    return text[:limit], f"document truncated from {len(text)} to {limit} characters (~{max_tokens} tokens)"


def cot_filter(method: MethodConfig, runs: list[SolverRun]) -> Optional[tuple[str, str]]:
    """The CoT-Self-Instruct filter's verdict on the strong solver's runs: None keeps the task, else
    (failure reason, detail). Runs the judge could not grade are left out; with none graded the task
    cannot be verified and is dropped."""
    if method.cot_filter == "none":
        return None
    graded = [r.grade for r in runs if r.grade is not None]
    if method.cot_filter == "answer_consistency":
        votes = [g.correct for g in graded if g.correct is not None]
        agree = sum(votes)
        if votes and agree * 2 > len(votes):
            return None
        return (FailureReason.INCONSISTENT_ANSWER,
                f"answer consistency: {agree} of {len(votes)} graded strong runs agree with the generated answer; "
                "a majority is needed")
    scores = [g.score for g in graded]
    if scores and min(scores) >= method.rip_min_score:
        return None
    lowest = f"{min(scores):.3f}" if scores else "none graded"
    return (FailureReason.LOW_MIN_SCORE,
            f"RIP: lowest strong-run score {lowest} < method.rip_min_score {method.rip_min_score}")


class DocumentRunner:
    """Runs one document through the chosen method, reporting every round to ``on_round``.

    ``on_call``, when given, is told after every model call completes (progress display).
    """

    def __init__(self, cfg: RootConfig, llm: LLM, domain: Domain, on_round: Callable[[dict[str, Any]], None],
                 on_call: Optional[Callable[[], None]] = None):
        self.cfg = cfg
        self.gen = cfg.generate
        self.llm = llm
        self.domain = domain
        self.policy = domain.policy
        self.on_round = on_round
        self.on_call = on_call
        self.max_doc_tokens = int(llm.endpoint("challenger").max_document_tokens)

    # ------------------------------------------------------------------ helpers
    def _seed_prefix(self, doc: Document, rnd: int) -> str:
        return f"{self.cfg.method.name}/{doc.id}/r{rnd}"

    def _recorder(self, doc: Document, rnd: int) -> RoundRecorder:
        return RoundRecorder(self.llm, self._seed_prefix(doc, rnd), on_call=self.on_call)

    async def _judge(self, rec: RoundRecorder, task: Task, answer: str, step: str) -> tuple[Optional[Grade], Optional[str]]:
        result = await rec.chat_json(
            "judge", step, self.domain.judge_messages(task, answer),
            schema=self.domain.judge_schema(task), parse=lambda obj: self.domain.parse_grade(task, obj),
            schema_name="verdicts",
        )
        return result.value, result.error

    async def solve(self, rec: RoundRecorder, task: Task, side: str, doc_text: Optional[str],
                    early_exit: bool, weak_mean: Optional[float] = None) -> SolverResult:
        """Sample a solver in waves, judge each answer, stop once the criterion is decided.

        For the strong side, ``weak_mean`` lets the gap rule decide early too. A
        domain whose loop judge reads every rollout exits early only on failure,
        so an accepted task is judged on the full set of runs.
        """
        k = self.gen.weak_samples if side == "weak" else self.gen.strong_samples
        if side == "weak":
            status_of = self.policy.weak_status
        else:
            def status_of(scores: list[float], k: int) -> Status:
                return self.policy.strong_status(scores, k, weak_mean=weak_mean)
        stop_on = {Status.FAIL} if self.domain.has_loop_judge else {Status.PASS, Status.FAIL}
        role = f"{side}_solver"
        messages = self.domain.solver_messages(task, doc_text)
        result = SolverResult()
        drawn = 0
        while drawn < k:
            wave = min(self.gen.solver_wave, k - drawn)
            completions = await rec.chat(role, f"{side}/{drawn}", messages, n=wave)
            grades = await asyncio.gather(*(
                self._judge(rec, task, c.text, f"judge/{side}/{drawn + i}") for i, c in enumerate(completions)
            ))
            for c, (grade, err) in zip(completions, grades):
                result.runs.append(SolverRun(c.text, c.finish_reason, grade, err))
            drawn += wave
            # A run the judge could not grade is excluded (never scored 0): the criterion
            # is decided over the runs that were graded.
            effective_k = k - result.judge_failures
            result.status = status_of(result.scores, effective_k) if effective_k > 0 else Status.FAIL
            if early_exit and result.status in stop_on and drawn < k:
                result.saved = k - drawn
                break
        if result.status is Status.UNDECIDED:  # only when early exit is off mid-way; decide on all runs
            result.status = status_of(result.scores, len(result.scores))
        return result

    async def _diagnose(self, rec: RoundRecorder, task: Task, reason: str, weak: list[float],
                        strong: list[float], detail: str) -> str:
        completion = (await rec.chat("feedback", "feedback",
                                     self.domain.feedback_messages(task, reason, weak, strong, detail)))[0]
        return completion.text.strip()[:DIAGNOSIS_MAX_CHARS] or detail

    # ------------------------------------------------------------------ methods
    async def run(self, doc: Document) -> DocOutcome:
        doc_text, warning = truncate_document(doc.text, self.max_doc_tokens)
        warnings = [warning] if warning else []
        if self.domain.has_extractor:
            suitable = await self._extract(doc, doc_text, warnings)
            if not suitable:
                return DocOutcome(doc.id, "unsuitable", 0, reason=FailureReason.UNSUITABLE)
        if self.cfg.method.name == "cot":
            return await self._run_cot(doc, doc_text, warnings)
        return await self._run_agentic(doc, doc_text, warnings)

    async def _extract(self, doc: Document, doc_text: str, warnings: list[str]) -> bool:
        started = time.perf_counter()
        rec = self._recorder(doc, 0)
        result = await rec.chat_json("challenger", "extract", self.domain.extractor_messages(doc_text),
                                     schema=self.domain.extractor_schema, parse=self.domain.parse_extractor,
                                     schema_name="suitability")
        suitable, notes = result.value if result.ok else (False, f"extractor output unusable: {result.error}")
        self._emit(doc, 0, rec, started, warnings, status="extracted" if suitable else "rejected",
                   reason=None if suitable else FailureReason.UNSUITABLE, detail=notes)
        return suitable

    async def _propose(self, rec: RoundRecorder, doc_text: str, history: list[FailedAttempt],
                       method: str) -> tuple[Optional[Task], Optional[str]]:
        result = await rec.chat_json("challenger", "challenger",
                                     self.domain.challenger_messages(doc_text, history, method),
                                     schema=self.domain.challenger_schema, parse=self.domain.parse_task,
                                     schema_name="task")
        return result.value, result.error

    async def _verify(self, rec: RoundRecorder, task: Task, doc_text: str) -> tuple[bool, str, dict[str, Any]]:
        """Framework rules first (free), then the LLM quality verifier."""
        problems = self.domain.structural_problems(task, doc_text) if self.cfg.domain.structural_checks else []
        info: dict[str, Any] = {"structural_problems": problems}
        if problems:
            return False, "; ".join(problems), info
        if not self.gen.quality_verifier:
            return True, "", info
        result = await rec.chat_json("quality_verifier", "qv", self.domain.qv_messages(task, doc_text),
                                     schema=self.domain.qv_schema, parse=self.domain.parse_qv, schema_name="verdict")
        if not result.ok:
            info["qv_error"] = result.error
            return False, f"quality verifier output unusable: {result.error}", info
        passed, feedback = result.value
        info["qv"] = {"passed": passed, "feedback": feedback}
        return passed, feedback, info

    async def _run_agentic(self, doc: Document, doc_text: str, warnings: list[str]) -> DocOutcome:
        history: list[FailedAttempt] = []
        for rnd in range(1, self.gen.max_rounds + 1):
            started = time.perf_counter()
            rec = self._recorder(doc, rnd)
            task, error = await self._propose(rec, doc_text, history, "agentic")
            if task is None:
                detail = f"challenger output unusable: {error}"
                history.append(FailedAttempt(rnd, FailureReason.MALFORMED, "", detail, None, None))
                self._emit(doc, rnd, rec, started, warnings, status="rejected", reason=FailureReason.MALFORMED,
                           detail=detail)
                continue
            passed, feedback, qv_info = await self._verify(rec, task, doc_text)
            if not passed:
                history.append(FailedAttempt(rnd, FailureReason.FAILED_QV, task.question, feedback, None, None))
                self._emit(doc, rnd, rec, started, warnings, task=task, status="rejected",
                           reason=FailureReason.FAILED_QV, detail=feedback, **qv_info)
                continue
            weak = await self.solve(rec, task, "weak", None, self.gen.early_exit)
            strong: Optional[SolverResult] = None
            if weak.status is Status.FAIL:
                decision = Decision(False, FailureReason.TOO_EASY,
                                    f"weak solver scored {_fmt(weak.scores)}: the weak criterion does not hold")
            else:
                privileged = doc_text if self.gen.strong_sees_document else None
                strong = await self.solve(rec, task, "strong", privileged, self.gen.early_exit,
                                          weak_mean=mean(weak.scores))
                decision = self.policy.decide(weak.scores, strong.scores)
            loop_verdict = None
            if decision.accepted and self.domain.has_loop_judge:
                loop_verdict = await self._loop_judge(rec, task, weak, strong)
                if loop_verdict.get("verdict") != "accept" and self.cfg.domain.acceptance.require_loop_judge_accept:
                    decision = Decision(False, FailureReason.LOOP_JUDGE_IMPROVE,
                                        loop_verdict.get("suggestion_for_writer") or loop_verdict.get("verdict_reason", ""))
            strong_scores = strong.scores if strong else []
            extra = dict(qv_info, weak=[r.row() for r in weak.runs], strong=[r.row() for r in strong.runs] if strong else [],
                         weak_mean=mean(weak.scores), strong_mean=mean(strong_scores),
                         calls_saved=weak.saved + (strong.saved if strong else 0),
                         strong_skipped=self.gen.strong_samples if strong is None else 0,
                         loop_judge=loop_verdict)
            if decision.accepted:
                self._emit(doc, rnd, rec, started, warnings, task=task, status="accepted", reason=None,
                           detail=decision.detail, **extra)
                example = self._example(doc, task, weak.scores, strong_scores, rnd, loop_verdict)
                return DocOutcome(doc.id, "accepted", rnd, example=example)
            diagnosis = await self._diagnose(rec, task, decision.reason, weak.scores, strong_scores, decision.detail)
            history.append(FailedAttempt(rnd, decision.reason, task.question, diagnosis,
                                         mean(weak.scores), mean(strong_scores) if strong else None))
            self._emit(doc, rnd, rec, started, warnings, task=task, status="rejected", reason=decision.reason,
                       detail=decision.detail, diagnosis=diagnosis, **extra)
        return DocOutcome(doc.id, "exhausted", self.gen.max_rounds,
                          reason=history[-1].reason if history else None)

    async def _loop_judge(self, rec: RoundRecorder, task: Task, weak: SolverResult,
                          strong: Optional[SolverResult]) -> dict[str, Any]:
        strong_runs = strong.runs if strong else []
        result = await rec.chat_json(
            "judge", "loop_judge",
            self.domain.loop_judge_messages(task, [r.answer for r in weak.runs], [r.answer for r in strong_runs],
                                            weak.scores, strong.scores if strong else []),
            schema=self.domain.loop_judge_schema, parse=self.domain.parse_loop_judge, schema_name="loop_verdict",
        )
        if not result.ok:
            # Unsure means improve: an unusable verdict never accepts.
            return {"verdict": "improve", "verdict_reason": f"loop judge output unusable: {result.error}"}
        return result.value

    async def _run_cot(self, doc: Document, doc_text: str, warnings: list[str]) -> DocOutcome:
        """One shot: no solver feedback. Solvers are still scored for the data-quality table."""
        started = time.perf_counter()
        rec = self._recorder(doc, 1)
        task, error = await self._propose(rec, doc_text, [], "cot")
        if task is None:
            detail = f"challenger output unusable: {error}"
            self._emit(doc, 1, rec, started, warnings, status="rejected", reason=FailureReason.MALFORMED, detail=detail)
            return DocOutcome(doc.id, "rejected", 1, reason=FailureReason.MALFORMED)
        passed, feedback, qv_info = await self._verify(rec, task, doc_text) if (
            self.cfg.method.qv_filter or self.gen.quality_verifier) else (True, "", {})
        if self.cfg.method.qv_filter and not passed:
            self._emit(doc, 1, rec, started, warnings, task=task, status="rejected", reason=FailureReason.FAILED_QV,
                       detail=feedback, **qv_info)
            return DocOutcome(doc.id, "rejected", 1, reason=FailureReason.FAILED_QV)
        weak_scores: list[float] = []
        strong_scores: list[float] = []
        loop_verdict: Optional[dict[str, Any]] = None
        extra: dict[str, Any] = dict(qv_info)
        if self.cfg.method.score_solvers:
            privileged = doc_text if self.gen.strong_sees_document else None
            weak, strong = await asyncio.gather(self.solve(rec, task, "weak", None, early_exit=False),
                                                self.solve(rec, task, "strong", privileged, early_exit=False))
            weak_scores, strong_scores = weak.scores, strong.scores
            extra.update(weak=[r.row() for r in weak.runs], strong=[r.row() for r in strong.runs],
                         weak_mean=mean(weak_scores), strong_mean=mean(strong_scores))
            # Recorded, not used to filter: the baseline has no solver feedback.
            extra["would_pass_agentic"] = self.policy.decide(weak_scores, strong_scores).accepted if (
                weak_scores and strong_scores) else None
            if self.domain.has_loop_judge:
                # Recorded like the would-be agentic decision, never used to filter: the data-quality table
                # compares grpo_suitability of CoT and agentic items (paper, legal: 4.8% vs 52% high).
                loop_verdict = await self._loop_judge(rec, task, weak, strong)
                extra["loop_judge"] = loop_verdict
            rejected = cot_filter(self.cfg.method, strong.runs)
            if rejected is not None:
                reason, detail = rejected
                self._emit(doc, 1, rec, started, warnings, task=task, status="rejected", reason=reason,
                           detail=detail, **extra)
                return DocOutcome(doc.id, "rejected", 1, reason=reason)
        self._emit(doc, 1, rec, started, warnings, task=task, status="accepted", reason=None,
                   detail="one-shot CoT task", **extra)
        return DocOutcome(doc.id, "accepted", 1,
                          example=self._example(doc, task, weak_scores, strong_scores, 1, loop_verdict))

    # ------------------------------------------------------------------ records
    def _example(self, doc: Document, task: Task, weak: list[float], strong: list[float], rounds: int,
                 loop_verdict: Optional[dict[str, Any]]) -> dict[str, Any]:
        weak_mean, strong_mean = mean(weak), mean(strong)
        row = {
            "id": f"{self.cfg.method.name}/{doc.id}",
            "document_id": doc.id,
            "domain": self.domain.name,
            "method": self.cfg.method.name,
            **task.to_dict(),
            "weak_scores": weak,
            "strong_scores": strong,
            "weak_mean": weak_mean,
            "strong_mean": strong_mean,
            "gap": (strong_mean - weak_mean) if weak and strong else None,
            "rounds_used": rounds,
        }
        if loop_verdict is not None:
            row["loop_judge"] = loop_verdict
        return row

    def _emit(self, doc: Document, rnd: int, rec: RoundRecorder, started: float, warnings: list[str], *,
              status: str, reason: Optional[str], detail: str, task: Optional[Task] = None, **extra: Any) -> None:
        row = {
            "document_id": doc.id,
            "round": rnd,
            "method": self.cfg.method.name,
            "domain": self.domain.name,
            "status": status,
            "reason": reason,
            "detail": detail,
            "task": task.to_dict() if task else None,
            **extra,
            "warnings": warnings,
            "tokens": rec.tokens_by_role(),
            "calls": rec.calls,
            "seconds": round(time.perf_counter() - started, 3),
        }
        self.on_round(row)


def _fmt(scores: list[float]) -> str:
    return "[" + ", ".join(f"{s:.2f}" for s in scores) + "]"


__all__ = ["DocOutcome", "DocumentRunner", "EndpointUnreachable", "truncate_document"]
