"""Acceptance rules: is a task at the right difficulty for the model we train?

A task is worth keeping when the weak solver (the model to be trained) fails
and the strong solver succeeds (paper notes: "The idea in one paragraph").
Each rule of the paper is one policy, chosen by ``acceptance.policy``:

- ``cs_paper``: strong mean >= strong_min, weak mean < weak_max, gap >= min_gap.
- ``cs_deployed``: weak mean <= weak_max, no weak run > weak_run_max, no weak
  zero; strong_min <= strong mean < strong_max, no strong zero; gap >= min_gap.
- ``verifiable``: weak correct in <= weak_max_correct runs, strong in >=
  strong_min_correct runs (scores are 1.0 / 0.0).
- ``loop_judge`` (the paper's legal rule): no fixed threshold; the domain's loop
  judge reads every rollout and decides (``apply_loop_judge``).
- ``legal_gap``: weak mean < weak_max and gap >= min_gap, then the loop judge
  may still veto (``apply_loop_judge``). Not in the paper; kept as an option.

The loop samples the weak solver first and may stop early only on a rejection:
``weak_status(scores, k)`` is PASS or FAIL only when *every* way the remaining
``k - len(scores)`` runs could score (anywhere in [0, 1]; 0 or 1 for
verifiable) leads to the same verdict, and UNDECIDED otherwise, and the loop
stops at FAIL. The bounds are the means of the two extreme completions, which
is exact because every rule is monotone in each run.

>>> from autodata.config import AcceptanceConfig
>>> policy = build_policy(AcceptanceConfig(policy="cs_paper"))
>>> policy.weak_status([1.0, 1.0], k=3)          # mean >= 2/3 whatever comes next
<Status.FAIL: 'fail'>
>>> policy.decide(weak=[0.2, 0.3, 0.1], strong=[0.9, 0.8, 0.7]).accepted
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Optional, Protocol

from autodata.config import AcceptanceConfig
from autodata.errors import lookup
from autodata.scoring import at_least, at_most, below, count_correct, mean


class Status(Enum):
    PASS = "pass"
    FAIL = "fail"
    UNDECIDED = "undecided"


class FailureReason:
    """Why a round ended without an accepted task (the ``Decision.reason`` values)."""

    TOO_EASY = "too_easy"
    FAILED_ON_STRONG = "failed_on_strong"
    FAILED_QV = "failed_qv"
    MALFORMED = "malformed"
    UNSUITABLE = "unsuitable"
    LOOP_JUDGE_IMPROVE = "loop_judge_improve"
    BACKEND_ERROR = "backend_error"
    # CoT-Self-Instruct filters (method=cot, method.cot_filter)
    INCONSISTENT_ANSWER = "inconsistent_answer"
    LOW_MIN_SCORE = "low_min_score"


ACCEPTED = "accepted"

# Feedback groups the challenger sees. A malformed task is shown with the QV
# failures because to the writer both mean "the task itself was not valid".
# Unsuitable documents and backend errors are absent on purpose: they say
# nothing about the question, so they are not feedback.
GROUP_TITLES: dict[str, str] = {
    FailureReason.TOO_EASY: "TOO EASY",
    FailureReason.FAILED_ON_STRONG: "FAILED ON STRONG",
    FailureReason.FAILED_QV: "FAILED QV",
    FailureReason.MALFORMED: "FAILED QV",
    FailureReason.LOOP_JUDGE_IMPROVE: "LOOP JUDGE: IMPROVE",
}


@dataclass(frozen=True)
class Decision:
    accepted: bool
    # FailureReason value, or "accepted"
    reason: str
    # One line with the numbers behind the verdict (goes into logs and feedback)
    detail: str


class AcceptancePolicy(Protocol):
    name: str
    # The verdict is (partly) the domain's loop judge's (``apply_loop_judge``); validation needs a domain with one
    needs_loop_judge: bool

    def weak_status(self, scores: list[float], k: int) -> Status:
        """Is the weak criterion (weak low enough) met, given len(scores) of k runs?"""
        ...

    def strong_status(self, scores: list[float], k: int, weak_mean: Optional[float] = None) -> Status:
        """Is the strong criterion met? With ``weak_mean`` the gap rule is included."""
        ...

    def decide(self, weak: list[float], strong: list[float]) -> Decision:
        """Complete verdict; ``strong`` may be empty when the weak criterion failed."""
        ...


def _fmt(scores: Sequence[float]) -> str:
    return ", ".join(f"{s:.3f}" for s in scores)


def _check_runs(scores: Sequence[float], k: int, who: str) -> None:
    if len(scores) > k:
        raise ValueError(f"{who}: got {len(scores)} runs but k={k}; k is the total number of runs planned")
    bad = [s for s in scores if not 0.0 <= s <= 1.0]
    if bad:
        raise ValueError(f"{who}: scores must lie in [0, 1], found {bad}; scores come from scoring.rubric_score")


@dataclass(frozen=True)
class _Window:
    """A criterion on a list of runs: the mean inside a window, each run within bounds.

    low <= mean, and mean < high (or <= high when high_inclusive); every run
    <= run_max; no run exactly 0 unless zero_runs_ok.
    """

    low: Optional[float] = None
    high: Optional[float] = None
    high_inclusive: bool = False
    run_max: Optional[float] = None
    zero_runs_ok: bool = True

    def mean_ok(self, m: float) -> bool:
        return self._meets(m, m)

    def _meets(self, lowest: float, highest: float) -> bool:
        """Does some mean in [lowest, highest] satisfy the window? (Intervals meet.)"""
        if self.low is not None and not at_least(highest, self.low):
            return False
        if self.high is not None:
            return at_most(lowest, self.high) if self.high_inclusive else below(lowest, self.high)
        return True

    def run_problems(self, scores: Sequence[float], who: str) -> list[str]:
        problems = []
        if self.run_max is not None:
            problems += [f"{who} run {s:.3f} > run max {self.run_max:.3f}" for s in scores if s > self.run_max]
        if not self.zero_runs_ok and any(s == 0.0 for s in scores):
            problems.append(f"{who} has a run scoring 0 (reject_zero_runs)")
        return problems

    def status(self, scores: Sequence[float], k: int) -> Status:
        if self.run_problems(scores, ""):
            return Status.FAIL
        rest = k - len(scores)
        # Extreme means reachable by completions that keep every run legal. When
        # zeros are banned, the lowest is approached by tiny positive runs: equal
        # to the all-zero mean within the comparison tolerance.
        top = 1.0 if self.run_max is None else min(1.0, self.run_max)
        lowest = mean([*scores, *[0.0] * rest])
        highest = mean([*scores, *[top] * rest])
        if not self._meets(lowest, highest):
            return Status.FAIL
        if rest == 0:
            return Status.PASS
        # Every completion passes only if no remaining run can break a run rule
        # and both extreme means (any run in [0, 1]) sit inside the window.
        runs_free = self.zero_runs_ok and (self.run_max is None or self.run_max >= 1.0)
        if runs_free and self.mean_ok(lowest) and self.mean_ok(mean([*scores, *[1.0] * rest])):
            return Status.PASS
        return Status.UNDECIDED

    def describe(self, m: float, who: str) -> str:
        parts = []
        if self.low is not None:
            parts.append(f">= {self.low:.3f}")
        if self.high is not None:
            parts.append(f"{'<=' if self.high_inclusive else '<'} {self.high:.3f}")
        return f"{who} mean {m:.3f} (needs {' and '.join(parts) or 'anything'})"


class _MeanPolicy:
    """Shared logic of the rules that compare mean rubric scores."""

    name = ""
    needs_loop_judge = False

    def __init__(self, cfg: AcceptanceConfig):
        self.cfg = cfg
        self.weak_window = self._weak_window()
        self.strong_window = self._strong_window()

    def _weak_window(self) -> _Window:
        raise NotImplementedError

    def _strong_window(self) -> _Window:
        raise NotImplementedError

    def weak_status(self, scores: list[float], k: int) -> Status:
        _check_runs(scores, k, f"{self.name}.weak_status")
        return self.weak_window.status(scores, k)

    def strong_status(self, scores: list[float], k: int, weak_mean: Optional[float] = None) -> Status:
        _check_runs(scores, k, f"{self.name}.strong_status")
        window = self.strong_window
        if weak_mean is not None:
            # The gap rule is one more lower bound on the strong mean.
            floor = self._gap_floor(weak_mean)
            window = replace(window, low=floor if window.low is None else max(window.low, floor))
        return window.status(scores, k)

    def _gap_floor(self, weak_mean: float) -> float:
        return weak_mean + self.cfg.min_gap

    def decide(self, weak: list[float], strong: list[float]) -> Decision:
        _check_runs(weak, len(weak), f"{self.name}.decide (weak)")
        if not weak:
            raise ValueError(f"{self.name}.decide got no weak runs; sample the weak solver first")
        weak_mean = mean(weak)
        if self.weak_window.status(weak, len(weak)) is Status.FAIL:
            problems = self.weak_window.run_problems(weak, "weak")
            if not self.weak_window.mean_ok(weak_mean):
                problems.insert(0, self.weak_window.describe(weak_mean, "weak"))
            return Decision(False, FailureReason.TOO_EASY, f"{'; '.join(problems)}; weak runs [{_fmt(weak)}]")
        if not strong:
            raise ValueError(
                f"{self.name}.decide: the weak criterion passed but there are no strong runs; "
                "sample the strong solver before deciding"
            )
        _check_runs(strong, len(strong), f"{self.name}.decide (strong)")
        strong_mean = mean(strong)
        runs = f"weak runs [{_fmt(weak)}], strong runs [{_fmt(strong)}]"
        if self.strong_window.status(strong, len(strong)) is Status.FAIL:
            problems = self.strong_window.run_problems(strong, "strong")
            if not self.strong_window.mean_ok(strong_mean):
                problems.insert(0, self.strong_window.describe(strong_mean, "strong"))
            return Decision(False, FailureReason.FAILED_ON_STRONG, f"{'; '.join(problems)}; {runs}")
        gap = strong_mean - weak_mean
        if not at_least(strong_mean, self._gap_floor(weak_mean)):
            return Decision(
                False,
                FailureReason.FAILED_ON_STRONG,
                f"gap {gap:.3f} < min_gap {self.cfg.min_gap:.3f} (weak mean {weak_mean:.3f}, "
                f"strong mean {strong_mean:.3f}); {runs}",
            )
        return Decision(
            True, ACCEPTED, f"weak mean {weak_mean:.3f}, strong mean {strong_mean:.3f}, gap {gap:.3f}; {runs}"
        )


class CSPaperPolicy(_MeanPolicy):
    """Paper prose: strong >= 0.65, weak < 0.50, gap >= 0.20 (values from the config)."""

    name = "cs_paper"

    def _weak_window(self) -> _Window:
        return _Window(high=self.cfg.weak_max)

    def _strong_window(self) -> _Window:
        return _Window(low=self.cfg.strong_min)


class CSDeployedPolicy(_MeanPolicy):
    """The deployed prompt's stricter rule, with per-run caps and the zero-run ban."""

    name = "cs_deployed"

    def _weak_window(self) -> _Window:
        return _Window(
            high=self.cfg.weak_max,
            high_inclusive=True,
            run_max=self.cfg.weak_run_max,
            zero_runs_ok=not self.cfg.reject_zero_runs,
        )

    def _strong_window(self) -> _Window:
        # strong_max guards against tasks so easy that even a near-perfect
        # strong score says little about the weak model.
        # strong_max = 1.0 turns the guard off: no mean lies above 1, so "below 1" would only reject perfect runs.
        high = self.cfg.strong_max if self.cfg.strong_max < 1.0 else None
        return _Window(low=self.cfg.strong_min, high=high, zero_runs_ok=not self.cfg.reject_zero_runs)


class LegalGapPolicy(_MeanPolicy):
    """A framework gate for legal, not in the paper: weak mean < weak_max and a gap of min_gap.

    The loop judge then sees only tasks that passed the gate and may veto them.
    Without ``weak_mean`` the strong criterion checks strong mean >= min_gap,
    which every accepted task needs (the weak mean is never below 0).
    """

    name = "legal_gap"
    needs_loop_judge = True

    def _weak_window(self) -> _Window:
        return _Window(high=self.cfg.weak_max)

    def _strong_window(self) -> _Window:
        return _Window(low=self.cfg.min_gap)


class LoopJudgePolicy:
    """The paper's legal rule: no fixed threshold, the loop judge decides.

    Both solver criteria hold whatever the scores (so the loop draws every run
    and the judge reads them all), and ``decide`` leaves the verdict to
    ``apply_loop_judge``.

    >>> policy = LoopJudgePolicy(AcceptanceConfig(policy="loop_judge"))
    >>> policy.weak_status([1.0], k=5), policy.decide([0.2] * 5, [0.387] * 3).accepted
    (<Status.PASS: 'pass'>, True)
    """

    name = "loop_judge"
    needs_loop_judge = True

    def __init__(self, cfg: AcceptanceConfig):
        self.cfg = cfg

    def weak_status(self, scores: list[float], k: int) -> Status:
        _check_runs(scores, k, "loop_judge.weak_status")
        return Status.PASS

    def strong_status(self, scores: list[float], k: int, weak_mean: Optional[float] = None) -> Status:
        _check_runs(scores, k, "loop_judge.strong_status")
        return Status.PASS

    def decide(self, weak: list[float], strong: list[float]) -> Decision:
        if not weak or not strong:
            raise ValueError("loop_judge.decide needs graded weak and strong runs; the loop judge reads both")
        weak_mean, strong_mean = mean(weak), mean(strong)
        return Decision(True, ACCEPTED, f"no threshold, the loop judge decides: weak mean {weak_mean:.3f}, strong "
                                        f"mean {strong_mean:.3f}, gap {strong_mean - weak_mean:.3f}; weak runs "
                                        f"[{_fmt(weak)}], strong runs [{_fmt(strong)}]")


class VerifiablePolicy:
    """Counts of correct runs: weak right at most weak_max_correct times, strong at least strong_min_correct."""

    name = "verifiable"
    needs_loop_judge = False

    def __init__(self, cfg: AcceptanceConfig):
        self.cfg = cfg

    def weak_status(self, scores: list[float], k: int) -> Status:
        _check_runs(scores, k, "verifiable.weak_status")
        correct, rest = count_correct(scores), k - len(scores)
        if correct > self.cfg.weak_max_correct:
            return Status.FAIL
        if correct + rest <= self.cfg.weak_max_correct:
            return Status.PASS
        return Status.UNDECIDED

    def strong_status(self, scores: list[float], k: int, weak_mean: Optional[float] = None) -> Status:
        # weak_mean is unused: the two count thresholds already imply the gap.
        _check_runs(scores, k, "verifiable.strong_status")
        correct, rest = count_correct(scores), k - len(scores)
        if correct >= self.cfg.strong_min_correct:
            return Status.PASS
        if correct + rest < self.cfg.strong_min_correct:
            return Status.FAIL
        return Status.UNDECIDED

    def decide(self, weak: list[float], strong: list[float]) -> Decision:
        if not weak:
            raise ValueError("verifiable.decide got no weak runs; sample the weak solver first")
        weak_right = count_correct(weak)
        if self.weak_status(weak, len(weak)) is Status.FAIL:
            return Decision(
                False,
                FailureReason.TOO_EASY,
                f"weak correct in {weak_right} of {len(weak)} runs (needs <= {self.cfg.weak_max_correct})",
            )
        if not strong:
            raise ValueError(
                "verifiable.decide: the weak criterion passed but there are no strong runs; "
                "sample the strong solver before deciding"
            )
        strong_right = count_correct(strong)
        summary = f"weak correct in {weak_right} of {len(weak)} runs, strong in {strong_right} of {len(strong)}"
        if self.strong_status(strong, len(strong)) is Status.FAIL:
            return Decision(
                False,
                FailureReason.FAILED_ON_STRONG,
                f"{summary} (strong needs >= {self.cfg.strong_min_correct})",
            )
        return Decision(True, ACCEPTED, summary)


POLICIES: dict[str, type] = {
    "cs_paper": CSPaperPolicy,
    "cs_deployed": CSDeployedPolicy,
    "verifiable": VerifiablePolicy,
    "loop_judge": LoopJudgePolicy,
    "legal_gap": LegalGapPolicy,
}


def build_policy(cfg: AcceptanceConfig) -> AcceptancePolicy:
    """The policy ``cfg.policy`` names, bound to the thresholds in ``cfg``."""
    return lookup(POLICIES, cfg.policy, "policy", key="acceptance.policy")(cfg)


def apply_loop_judge(decision: Decision, verdict: dict, cfg: AcceptanceConfig,
                     hard_rule_problems: Sequence[str] = ()) -> Decision:
    """The framework rule's decision, then the loop judge's: a task is accepted only when both say so.

    Under ``loop_judge`` the framework rule always says yes, so the judge
    decides; under ``legal_gap`` it can only veto, and ``require_loop_judge_accept=false``
    leaves the gap rule alone (validation refuses that flag with ``loop_judge``, which
    would then accept everything). Anything but an explicit ``accept`` is improve
    (unsure means improve), and a failed hard rule (``Domain.hard_rule_problems``)
    forces improve whatever the judge said. ``verdict`` is the dict from
    ``Domain.parse_loop_judge``.

    >>> ok = Decision(True, ACCEPTED, "gap 0.187")
    >>> apply_loop_judge(ok, {"verdict": "accept"}, AcceptanceConfig(policy="loop_judge")).accepted
    True
    >>> apply_loop_judge(ok, {"verdict": "improve", "verdict_reason": "rubric rewards length"},
    ...                  AcceptanceConfig(policy="loop_judge")).reason
    'loop_judge_improve'
    """
    if not decision.accepted:
        return decision
    if hard_rule_problems:
        return Decision(False, FailureReason.LOOP_JUDGE_IMPROVE,
                        f"hard rule: {'; '.join(hard_rule_problems)}; {decision.detail}")
    if not cfg.require_loop_judge_accept or verdict.get("verdict") == "accept":
        return decision
    why = [verdict.get("verdict_reason") or "the loop judge asked for an improved task"]
    if verdict.get("suggestion_for_writer"):
        why.append(f"suggestion for the writer: {verdict['suggestion_for_writer']}")
    return Decision(False, FailureReason.LOOP_JUDGE_IMPROVE, f"{'; '.join(why)}; {decision.detail}")
