"""The per-document loops: Agentic Self-Instruct and the CoT Self-Instruct baseline.

Agentic, per document and round:
challenger (``generate.challengers_per_round`` of them at once; the round takes
the lowest-numbered task that passes) -> framework structural checks -> quality
verifier -> weak solver (k runs) -> only if the weak criterion holds, strong
solver (k runs) -> judge every answer -> accept, or a diagnosis from the
feedback writer and a new round whose challenger prompt groups earlier failures
as TOO EASY / FAILED ON STRONG / FAILED QV / LOOP JUDGE: IMPROVE.

Early exit stops a solver's sampling only once the task is certain to be
rejected, so every accepted row carries all k runs of each solver.

The acceptance decision is computed by ``domain.policy`` from the judge's
per-criterion verdicts (or equivalence counts). A domain with a loop judge
(legal) hands it every rollout of a task the policy let through, and its
verdict (``acceptance.apply_loop_judge``) decides: alone under the paper's
``loop_judge`` policy, as a veto under ``legal_gap``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from autodata.acceptance import Decision, FailureReason, Status, apply_loop_judge
from autodata.backends.base import EndpointUnreachable
from autodata.config import MethodConfig, RootConfig
from autodata.corpus import Document
from autodata.domains.base import Domain, FailedAttempt, Grade, Task
from autodata.generate.documents import DocumentCap, truncate_document
from autodata.generate.recorder import RoundRecorder, document_ref
from autodata.guard import document_flags, final_answer, injection_flags
from autodata.llm import LLM
from autodata.scoring import mean_or_none

log = logging.getLogger(__name__)

DIAGNOSIS_MAX_CHARS = 800


@dataclass
class SolverRun:
    answer: str
    finish_reason: str
    grade: Optional[Grade]
    judge_error: Optional[str] = None
    # Checks of the injection guard the answer tripped; such a run scores 0 and never reaches the judge
    injection_flags: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "finish_reason": self.finish_reason,
            "score": self.grade.score if self.grade else None,
            "met": self.grade.met if self.grade else None,
            "correct": self.grade.correct if self.grade else None,
            "judge_error": self.judge_error,
            "injection_flags": self.injection_flags,
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


@dataclass
class Candidate:
    """One challenger's task in a round, and what the checks made of it."""

    index: int
    # This candidate's calls; the round's log takes them in index order
    rec: RoundRecorder
    task: Optional[Task] = None
    passed: bool = False
    # MALFORMED or FAILED_QV when it did not pass
    reason: Optional[str] = None
    detail: str = ""
    qv_info: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"index": self.index, "passed": self.passed, "reason": self.reason, "detail": self.detail,
                "question": self.task.question if self.task else None, "calls": len(self.rec.calls),
                # The whole task, so its quality verifier's prompt can be rendered again (autodata show)
                "task": self.task.to_dict() if self.task else None}


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
    ``doc_cap`` is the run's document cap (``documents.document_cap``); without it only the
    challenger endpoint's ``max_document_tokens`` cuts documents.
    """

    def __init__(self, cfg: RootConfig, llm: LLM, domain: Domain, on_round: Callable[[dict[str, Any]], None],
                 on_call: Optional[Callable[[], None]] = None, doc_cap: Optional[DocumentCap] = None):
        self.cfg = cfg
        self.gen = cfg.generate
        self.llm = llm
        self.domain = domain
        self.policy = domain.policy
        self.on_round = on_round
        self.on_call = on_call
        self.max_doc_tokens = doc_cap.tokens if doc_cap else llm.endpoint("challenger").max_document_tokens
        self.challengers = challengers_per_round(cfg, domain)
        # The harness that makes this run's data (autodata/variants.py); every accepted row carries it
        self.variant_id = domain.variant_id
        # generate.prompts_in_rounds=full: call rows keep their messages beside the prompt reference
        self.keep_messages = self.gen.prompts_in_rounds == "full"

    # ------------------------------------------------------------------ helpers
    def _seed_prefix(self, doc: Document, rnd: int) -> str:
        return f"{self.cfg.method.name}/{doc.id}/r{rnd}"

    def _recorder(self, doc: Document, rnd: int, sent: dict[str, Any]) -> RoundRecorder:
        """``sent``: the ``document_ref`` of the document's text as the prompts carry it."""
        return RoundRecorder(self.llm, self._seed_prefix(doc, rnd), on_call=self.on_call, variant=self.variant_id,
                             document=sent, keep_messages=self.keep_messages)

    async def _judge(self, rec: RoundRecorder, task: Task, answer: str, step: str) -> tuple[Optional[Grade], Optional[str]]:
        result = await rec.chat_json(
            "judge", step, self.domain.judge_messages(task, answer), template="judge", with_document=False,
            schema=self.domain.judge_schema(task), parse=lambda obj: self.domain.parse_grade(task, obj),
            schema_name="verdicts",
        )
        return result.value, result.error

    async def _guarded_judge(self, rec: RoundRecorder, task: Task, answer: str,
                             step: str) -> tuple[Optional[Grade], Optional[str], list[str]]:
        """The judge's grade of the final answer (the text after the reasoning block), or 0 without a judge call for
        a completion with no answer (empty, or reasoning cut off by the token budget) and for an answer that tries
        to instruct the judge (``generate.injection_guard``): the GRPO reward and eval score such answers the same
        way."""
        answer = final_answer(answer)
        if not answer:
            return Grade(0.0), None, []
        flags = injection_flags(answer, task.rubric, task.question) if self.gen.injection_guard else []
        if flags:
            return Grade(0.0), None, flags
        grade, error = await self._judge(rec, task, answer, step)
        return grade, error, []

    async def solve(self, rec: RoundRecorder, task: Task, side: str, doc_text: Optional[str],
                    early_exit: bool, weak_mean: Optional[float] = None) -> SolverResult:
        """Sample a solver in waves and judge each answer; with ``early_exit``, stop once the criterion fails.

        Only a failure stops sampling: a rejected task needs no more runs, while an
        accepted row must carry all k runs of each solver, as CoT rows do, so the
        data-quality table (means, gap, weak spread) compares like with like, and a
        loop judge reads every rollout. For the strong side, ``weak_mean`` (of all
        weak runs) lets the gap rule fail it early too.
        """
        k = self.gen.weak_samples if side == "weak" else self.gen.strong_samples
        if side == "weak":
            status_of = self.policy.weak_status
        else:
            def status_of(scores: list[float], k: int) -> Status:
                return self.policy.strong_status(scores, k, weak_mean=weak_mean)
        role = f"{side}_solver"
        messages = self.domain.solver_messages(task, doc_text)
        result = SolverResult()
        drawn = 0
        while drawn < k:
            wave = min(self.gen.solver_wave, k - drawn)
            completions = await rec.chat(role, f"{side}/{drawn}", messages, template="solver",
                                         with_document=doc_text is not None, n=wave)
            grades = await asyncio.gather(*(
                self._guarded_judge(rec, task, c.text, f"judge/{side}/{drawn + i}") for i, c in enumerate(completions)
            ))
            for c, (grade, err, flags) in zip(completions, grades):
                result.runs.append(SolverRun(c.text, c.finish_reason, grade, err, flags))
            drawn += wave
            # A run the judge could not grade is excluded (never scored 0): the criterion
            # is decided over the runs that were graded.
            effective_k = k - result.judge_failures
            result.status = status_of(result.scores, effective_k) if effective_k > 0 else Status.FAIL
            if early_exit and result.status is Status.FAIL and drawn < k:
                result.saved = k - drawn
                break
        return result

    async def _diagnose(self, rec: RoundRecorder, task: Task, reason: str, weak: list[float],
                        strong: list[float], detail: str) -> str:
        completion = (await rec.chat("feedback", "feedback",
                                     self.domain.feedback_messages(task, reason, weak, strong, detail),
                                     template="feedback", with_document=False))[0]
        return completion.text.strip()[:DIAGNOSIS_MAX_CHARS] or detail

    # ------------------------------------------------------------------ methods
    async def run(self, doc: Document) -> DocOutcome:
        doc_text, warning = truncate_document(doc.text, self.max_doc_tokens)
        warnings = [warning] if warning else []
        # Hashed once per document: every call that sends the text names it by this
        sent = document_ref(doc.id, doc_text)
        if self.domain.has_extractor:
            suitable = await self._extract(doc, doc_text, sent, warnings)
            if not suitable:
                return DocOutcome(doc.id, "unsuitable", 0, reason=FailureReason.UNSUITABLE)
        if self.cfg.method.name == "cot":
            return await self._run_cot(doc, doc_text, sent, warnings)
        return await self._run_agentic(doc, doc_text, sent, warnings)

    async def _extract(self, doc: Document, doc_text: str, sent: dict[str, Any], warnings: list[str]) -> bool:
        started = time.perf_counter()
        rec = self._recorder(doc, 0, sent)
        result = await rec.chat_json("challenger", "extract", self.domain.extractor_messages(doc_text),
                                     template="extractor", with_document=True,
                                     schema=self.domain.extractor_schema, parse=self.domain.parse_extractor,
                                     schema_name="suitability")
        suitable, notes = result.value if result.ok else (False, f"extractor output unusable: {result.error}")
        self._emit(doc, 0, rec, started, warnings, status="extracted" if suitable else "rejected",
                   reason=None if suitable else FailureReason.UNSUITABLE, detail=notes)
        return suitable

    async def _propose(self, rec: RoundRecorder, doc_text: str, history: list[FailedAttempt],
                       method: str, step: str = "challenger") -> tuple[Optional[Task], Optional[str]]:
        result = await rec.chat_json("challenger", step,
                                     self.domain.challenger_messages(doc_text, history, method, self.gen),
                                     template=self.domain.METHODS[method], with_document=True,
                                     schema=self.domain.challenger_schema, parse=self.domain.parse_task,
                                     schema_name="task")
        return result.value, result.error

    async def _verify(self, rec: RoundRecorder, task: Task, doc_text: str,
                      step: str = "qv") -> tuple[bool, str, dict[str, Any]]:
        """Framework rules first (free), then the LLM quality verifier."""
        problems = self.domain.structural_problems(task, doc_text) if self.cfg.domain.structural_checks else []
        info: dict[str, Any] = {"structural_problems": problems}
        if problems:
            return False, "; ".join(problems), info
        if not self.gen.quality_verifier:
            return True, "", info
        # The verifier's template (a variant may have rewritten it) renders on a deep copy of the task in an immutable
        # sandbox (PromptSet.messages): the rubric the judge grades and the row stores is the one checked above
        result = await rec.chat_json("quality_verifier", step, self.domain.qv_messages(task, doc_text),
                                     template="qv", with_document=True,
                                     schema=self.domain.qv_schema, parse=self.domain.parse_qv, schema_name="verdict")
        if not result.ok:
            info["qv_error"] = result.error
            return False, f"quality verifier output unusable: {result.error}", info
        passed, feedback = result.value
        info["qv"] = {"passed": passed, "feedback": feedback}
        return passed, feedback, info

    async def _candidate(self, doc: Document, rnd: int, index: int, doc_text: str, sent: dict[str, Any],
                         history: list[FailedAttempt]) -> Candidate:
        """One challenger's task and its checks (structural rules, then the quality verifier)."""
        cand = Candidate(index, self._recorder(doc, rnd, sent))
        # Candidate 0 keeps the step names of a one-challenger round, so its seeds and cache keys do not
        # depend on how many challengers run.
        suffix = f"/{index}" if index else ""
        cand.task, error = await self._propose(cand.rec, doc_text, history, "agentic", step=f"challenger{suffix}")
        if cand.task is None:
            cand.reason, cand.detail = FailureReason.MALFORMED, f"challenger output unusable: {error}"
            return cand
        cand.passed, feedback, cand.qv_info = await self._verify(cand.rec, cand.task, doc_text, step=f"qv{suffix}")
        if not cand.passed:
            cand.reason, cand.detail = FailureReason.FAILED_QV, feedback
        return cand

    async def _run_agentic(self, doc: Document, doc_text: str, sent: dict[str, Any], warnings: list[str]) -> DocOutcome:
        # autodata/generate/trajectory.py (history_before) rebuilds this list from the round rows to render a
        # challenger prompt again: a change to what goes into it must be made there too.
        history: list[FailedAttempt] = []
        for rnd in range(1, self.gen.max_rounds + 1):
            started = time.perf_counter()
            rec = self._recorder(doc, rnd, sent)
            candidates = await asyncio.gather(*(self._candidate(doc, rnd, i, doc_text, sent, history)
                                                for i in range(self.challengers)))
            # The lowest index that passed, not the first to finish: resume and the response cache replay the
            # same round whatever the timing. The round's log lists every candidate's calls in index order.
            chosen = next((c for c in candidates if c.passed), None)
            for cand in candidates:
                rec.calls.extend(cand.rec.calls)
            # Every failed candidate is an attempt the next round's writer hears about.
            history.extend(FailedAttempt(rnd, c.reason, c.task.question if c.task else "", c.detail, None, None)
                           for c in candidates if not c.passed)
            parallel: dict[str, Any] = {}
            if self.challengers > 1:
                parallel = {"challenger_index": chosen.index if chosen else None,
                            "challengers": [c.row() for c in candidates],
                            # What running several challengers cost over one
                            "calls_extra_challengers": sum(len(c.rec.calls) for c in candidates[1:])}
            if chosen is None:
                first = candidates[0]
                self._emit(doc, rnd, rec, started, warnings, task=first.task, status="rejected", reason=first.reason,
                           detail=first.detail, **first.qv_info, **parallel)
                continue
            task = chosen.task
            assert task is not None
            weak = await self.solve(rec, task, "weak", None, self.gen.early_exit)
            strong: Optional[SolverResult] = None
            if weak.status is Status.FAIL:
                decision = Decision(False, FailureReason.TOO_EASY,
                                    f"weak solver scored {_fmt(weak.scores)}: the weak criterion does not hold")
            else:
                privileged = doc_text if self.gen.strong_sees_document else None
                strong = await self.solve(rec, task, "strong", privileged, self.gen.early_exit,
                                          weak_mean=mean_or_none(weak.scores))
                decision = self.policy.decide(weak.scores, strong.scores) if strong.scores else Decision(
                    False, FailureReason.FAILED_ON_STRONG, "the judge could grade none of the strong runs")
            loop_verdict = None
            if decision.accepted and self.domain.has_loop_judge:
                loop_verdict = await self._loop_judge(rec, task, weak, strong)
                decision = apply_loop_judge(decision, loop_verdict, self.cfg.domain.acceptance,
                                            self.domain.hard_rule_problems(task))
            strong_scores = strong.scores if strong else []
            extra = dict(chosen.qv_info, weak=[r.row() for r in weak.runs],
                         strong=[r.row() for r in strong.runs] if strong else [],
                         weak_mean=mean_or_none(weak.scores), strong_mean=mean_or_none(strong_scores),
                         calls_saved=weak.saved + (strong.saved if strong else 0),
                         strong_skipped=self.gen.strong_samples if strong is None else 0,
                         loop_judge=loop_verdict, **parallel)
            if decision.accepted:
                self._emit(doc, rnd, rec, started, warnings, task=task, status="accepted", reason=None,
                           detail=decision.detail, **extra)
                example = self._example(doc, task, weak.scores, strong_scores, rnd, loop_verdict)
                return DocOutcome(doc.id, "accepted", rnd, example=example)
            diagnosis = await self._diagnose(rec, task, decision.reason, weak.scores, strong_scores, decision.detail)
            history.append(FailedAttempt(rnd, decision.reason, task.question, diagnosis,
                                         mean_or_none(weak.scores), mean_or_none(strong_scores) if strong else None))
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
            template="loop_judge", with_document=False, schema=self.domain.loop_judge_schema,
            parse=self.domain.parse_loop_judge, schema_name="loop_verdict",
        )
        if not result.ok:
            # Unsure means improve: an unusable verdict never accepts.
            return {"verdict": "improve", "verdict_reason": f"loop judge output unusable: {result.error}"}
        return result.value

    async def _run_cot(self, doc: Document, doc_text: str, sent: dict[str, Any], warnings: list[str]) -> DocOutcome:
        """One shot: no solver feedback. Solvers are still scored for the data-quality table."""
        started = time.perf_counter()
        rec = self._recorder(doc, 1, sent)
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
                         weak_mean=mean_or_none(weak_scores), strong_mean=mean_or_none(strong_scores))
            # Recorded, not used to filter: the baseline has no solver feedback.
            would = self.policy.decide(weak_scores, strong_scores) if weak_scores and strong_scores else None
            if self.domain.has_loop_judge:
                # Recorded like the would-be agentic decision, never used to filter: the data-quality table
                # compares grpo_suitability of CoT and agentic items (paper, legal: 4.8% vs 52% high).
                loop_verdict = await self._loop_judge(rec, task, weak, strong)
                extra["loop_judge"] = loop_verdict
                if would is not None:
                    would = apply_loop_judge(would, loop_verdict, self.cfg.domain.acceptance,
                                             self.domain.hard_rule_problems(task))
            extra["would_pass_agentic"] = would.accepted if would is not None else None
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
        weak_mean, strong_mean = mean_or_none(weak), mean_or_none(strong)
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
            "variant": self.variant_id,
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
            # Checks of the injection guard the source document trips (its prompts fence it with a notice)
            "document_flags": list(document_flags(doc.text)),
            "warnings": warnings,
            "tokens": rec.tokens_by_role(),
            "calls": rec.calls,
            "seconds": round(time.perf_counter() - started, 3),
        }
        self.on_round(row)


def _fmt(scores: list[float]) -> str:
    return "[" + ", ".join(f"{s:.2f}" for s in scores) + "]"


def challengers_per_round(cfg: RootConfig, domain: Domain) -> int:
    """generate.challengers_per_round, or the domain's default when it is null."""
    return cfg.generate.challengers_per_round or domain.challengers_per_round


__all__ = ["DocOutcome", "DocumentRunner", "EndpointUnreachable", "challengers_per_round"]
