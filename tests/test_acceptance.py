"""Acceptance policies: golden edges at every threshold, and exact early exit.

The early-exit property is checked by brute force: for partial run lists, if a
status is decided, every completion of the remaining runs (over a grid that
contains the thresholds, tiny positive runs and the ends of [0, 1]) must agree
with the full decision; if it is undecided, some completion must go each way.
"""

from __future__ import annotations

import itertools
import random

import pytest

from autodata.acceptance import (
    ACCEPTED,
    GROUP_TITLES,
    POLICIES,
    Decision,
    FailureReason,
    Status,
    apply_loop_judge,
    build_policy,
)
from autodata.config import AcceptanceConfig
from autodata.scoring import mean

PAPER = AcceptanceConfig(policy="cs_paper")
# The conf/domain/cs_deployed.yaml preset
DEPLOYED = AcceptanceConfig(policy="cs_deployed", weak_max=0.65, strong_min=0.60)
LEGAL_GAP = AcceptanceConfig(policy="legal_gap")
# The conf/domain/legal.yaml preset: the paper's rule
LOOP_JUDGE = AcceptanceConfig(policy="loop_judge")
VERIFIABLE = AcceptanceConfig(policy="verifiable")


def decide(cfg, weak, strong):
    return build_policy(cfg).decide(weak, strong)


# ---------------------------------------------------------------- cs_paper edges
@pytest.mark.parametrize(
    "weak,strong,reason",
    [
        ([0.45] * 3, [0.65] * 3, ACCEPTED),  # every threshold met exactly
        ([0.50] * 3, [0.90] * 3, FailureReason.TOO_EASY),  # weak mean exactly weak_max: not below it
        ([0.4999] * 3, [0.90] * 3, ACCEPTED),
        ([0.20] * 3, [0.6499] * 3, FailureReason.FAILED_ON_STRONG),  # strong just below strong_min
        ([0.46] * 3, [0.65] * 3, FailureReason.FAILED_ON_STRONG),  # gap 0.19
        ([0.0, 0.5, 0.7], [1.0, 0.9, 0.8], ACCEPTED),  # a single high weak run is fine here
    ],
)
def test_cs_paper_edges(weak, strong, reason):
    assert decide(PAPER, weak, strong).reason == reason


def test_gap_failure_says_gap_and_numbers():
    d = decide(PAPER, [0.46] * 3, [0.65] * 3)
    assert d == Decision(False, FailureReason.FAILED_ON_STRONG, d.detail)
    assert "gap 0.190 < min_gap 0.200" in d.detail


def test_gap_at_threshold_survives_float_noise():
    cfg = AcceptanceConfig(policy="cs_paper", strong_min=0.6, weak_max=0.5, min_gap=0.2)
    # 0.6 - 0.4 is 0.19999999999999996 in floating point
    assert decide(cfg, [0.4, 0.4, 0.4], [0.6, 0.6, 0.6]).accepted


def test_weak_failure_needs_no_strong_runs():
    d = decide(PAPER, [0.9, 0.8, 0.7], [])
    assert d.reason == FailureReason.TOO_EASY and "weak mean 0.800" in d.detail
    with pytest.raises(ValueError, match="no strong runs"):
        decide(PAPER, [0.1, 0.1, 0.1], [])


# ---------------------------------------------------------------- cs_deployed edges
@pytest.mark.parametrize(
    "weak,strong,reason",
    [
        ([0.65, 0.65, 0.65], [0.94, 0.94, 0.94], ACCEPTED),  # weak mean exactly 0.65 is allowed (<=)
        ([0.75, 0.6, 0.6], [0.94] * 3, ACCEPTED),  # a weak run exactly at weak_run_max is allowed
        ([0.76, 0.1, 0.1], [0.9] * 3, FailureReason.TOO_EASY),  # one weak run above 0.75, mean only 0.32
        ([0.0, 0.3, 0.3], [0.9] * 3, FailureReason.TOO_EASY),  # a weak zero
        ([0.66, 0.66, 0.66], [0.95] * 3, FailureReason.TOO_EASY),
        ([0.2] * 3, [0.95] * 3, FailureReason.FAILED_ON_STRONG),  # strong mean at strong_max: too easy for all
        ([0.2] * 3, [0.9499] * 3, ACCEPTED),
        ([0.2] * 3, [0.60] * 3, ACCEPTED),  # strong mean exactly strong_min
        ([0.2] * 3, [0.59] * 3, FailureReason.FAILED_ON_STRONG),
        ([0.2] * 3, [0.0, 0.9, 0.9], FailureReason.FAILED_ON_STRONG),  # a strong zero
        ([0.45] * 3, [0.64] * 3, FailureReason.FAILED_ON_STRONG),  # gap 0.19
        ([0.45] * 3, [0.65] * 3, ACCEPTED),  # gap exactly 0.20
    ],
)
def test_cs_deployed_edges(weak, strong, reason):
    assert decide(DEPLOYED, weak, strong).reason == reason


def test_cs_deployed_zero_rule_is_configurable():
    lenient = AcceptanceConfig(policy="cs_deployed", weak_max=0.65, strong_min=0.60, reject_zero_runs=False)
    assert decide(lenient, [0.0, 0.3, 0.3], [0.0, 0.9, 0.95]).accepted
    d = decide(DEPLOYED, [0.0, 0.3, 0.3], [0.9] * 3)
    assert "run scoring 0" in d.detail


# ---------------------------------------------------------------- legal_gap and verifiable edges
@pytest.mark.parametrize(
    "weak,strong,reason",
    [
        ([0.2] * 5, [0.4] * 3, ACCEPTED),  # gap exactly 0.20
        ([0.2] * 5, [0.39] * 3, FailureReason.FAILED_ON_STRONG),
        ([0.5] * 5, [1.0] * 3, FailureReason.TOO_EASY),  # weak mean exactly weak_max
        ([0.0] * 5, [0.2] * 3, ACCEPTED),  # no absolute strong floor beyond the gap
    ],
)
def test_legal_gap_edges(weak, strong, reason):
    assert decide(LEGAL_GAP, weak, strong).reason == reason


@pytest.mark.parametrize(
    "weak,strong,reason",
    [
        ([1, 0, 0, 0], [1, 1, 1, 0], ACCEPTED),  # weak 1 of 4, strong 3 of 4: both exactly at the bounds
        ([0, 0, 0, 0], [1, 1, 1, 1], ACCEPTED),
        ([1, 1, 0, 0], [1, 1, 1, 1], FailureReason.TOO_EASY),
        ([1, 0, 0, 0], [1, 1, 0, 0], FailureReason.FAILED_ON_STRONG),
    ],
)
def test_verifiable_counts(weak, strong, reason):
    d = decide(VERIFIABLE, [float(x) for x in weak], [float(x) for x in strong])
    assert d.reason == reason


def test_verifiable_rejects_non_binary_scores():
    with pytest.raises(ValueError, match="1.0 .correct. or 0.0"):
        decide(VERIFIABLE, [0.5, 0.0], [1.0])


# ---------------------------------------------------------------- early exit: examples
@pytest.mark.parametrize(
    "cfg,side,scores,k,status",
    [
        (PAPER, "weak", [1.0, 1.0], 3, Status.FAIL),  # mean >= 2/3 whatever comes
        (PAPER, "weak", [0.0, 0.0], 3, Status.PASS),  # mean <= 1/3 whatever comes
        (PAPER, "weak", [0.5, 0.5], 3, Status.UNDECIDED),
        (PAPER, "weak", [0.75, 0.75], 3, Status.FAIL),  # lowest mean 0.5 is not below 0.5
        (PAPER, "strong", [1.0, 1.0], 3, Status.PASS),
        (PAPER, "strong", [0.0, 0.9], 3, Status.FAIL),  # highest mean 0.633 < 0.65
        (DEPLOYED, "weak", [0.3, 0.3], 3, Status.UNDECIDED),  # a later zero or > 0.75 run would fail it
        (DEPLOYED, "weak", [0.8], 3, Status.FAIL),
        (DEPLOYED, "weak", [0.0], 3, Status.FAIL),
        (DEPLOYED, "strong", [0.9, 0.9], 3, Status.UNDECIDED),  # a later zero would fail it
        (DEPLOYED, "strong", [1.0, 1.0], 3, Status.UNDECIDED),  # 0.667 to 1.0 reachable, and [0.60, 0.95) in it
        (DEPLOYED, "strong", [1.0] * 19, 20, Status.FAIL),  # lowest mean 0.95 is not below strong_max
        (VERIFIABLE, "weak", [1.0, 1.0], 4, Status.FAIL),
        (VERIFIABLE, "weak", [0.0, 0.0, 0.0], 4, Status.PASS),
        (VERIFIABLE, "weak", [0.0, 0.0], 4, Status.UNDECIDED),
        (VERIFIABLE, "strong", [1.0, 1.0, 1.0], 4, Status.PASS),
        (VERIFIABLE, "strong", [0.0, 0.0], 4, Status.FAIL),
        (VERIFIABLE, "strong", [1.0, 0.0], 4, Status.UNDECIDED),
    ],
)
def test_early_exit_examples(cfg, side, scores, k, status):
    policy = build_policy(cfg)
    got = policy.weak_status(scores, k) if side == "weak" else policy.strong_status(scores, k)
    assert got is status


def test_strong_status_includes_the_gap_when_weak_mean_is_known():
    policy = build_policy(PAPER)
    assert policy.strong_status([1.0, 1.0], 3) is Status.PASS
    # needs 0.49 + 0.20 = 0.69; the lowest reachable mean is 0.667
    assert policy.strong_status([1.0, 1.0], 3, weak_mean=0.49) is Status.UNDECIDED
    # needs 0.60 + 0.20 = 0.80; the highest reachable mean is 0.667, though 0.65 alone is reachable
    assert policy.strong_status([0.5, 0.5], 3) is Status.UNDECIDED
    assert policy.strong_status([0.5, 0.5], 3, weak_mean=0.60) is Status.FAIL


def test_status_rejects_more_runs_than_k_and_out_of_range_scores():
    policy = build_policy(PAPER)
    with pytest.raises(ValueError, match="got 3 runs but k=2"):
        policy.weak_status([0.1, 0.1, 0.1], 2)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        policy.weak_status([1.5], 3)


# ---------------------------------------------------------------- early exit: exactness property
CONFIGS = {
    "cs_paper": PAPER,
    "cs_deployed": DEPLOYED,
    "cs_deployed_zero_ok": AcceptanceConfig(policy="cs_deployed", weak_max=0.65, strong_min=0.60,
                                            reject_zero_runs=False),
    "legal_gap": LEGAL_GAP,
    "verifiable": VERIFIABLE,
}
GRID = sorted({0.0, 1e-12, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 0.95, 1.0})
PARTIAL_VALUES = [0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.65, 0.75, 0.8, 0.9, 1.0]


def _weak_ok(cfg):
    """A weak run list that passes every weak rule; its mean drives the gap rule of strong_status."""
    return [0.0] if cfg.policy == "verifiable" else [0.3]


def _final(cfg, side, full):
    """Does the criterion hold on a complete run list, per decide()?"""
    policy = build_policy(cfg)
    if side == "weak":
        return policy.decide(full, [1.0]).reason != FailureReason.TOO_EASY
    return policy.decide(_weak_ok(cfg), full).accepted


def _cases(cfg, rng):
    values = [0.0, 1.0] if cfg.policy == "verifiable" else PARTIAL_VALUES
    grid = [0.0, 1.0] if cfg.policy == "verifiable" else GRID
    for _ in range(200):
        k = rng.randint(1, 4)
        n = rng.randint(max(0, k - 2), k - 1)  # at most 2 runs missing keeps the brute force small
        yield [rng.choice(values) for _ in range(n)], k, grid


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("side", ["weak", "strong"])
def test_early_exit_is_exact(name, side):
    cfg = CONFIGS[name]
    policy = build_policy(cfg)
    rng = random.Random(f"{name}/{side}")
    seen = set()
    for partial, k, grid in _cases(cfg, rng):
        if side == "weak":
            status = policy.weak_status(partial, k)
        else:
            status = policy.strong_status(partial, k, weak_mean=mean(_weak_ok(cfg)))
        outcomes = {_final(cfg, side, partial + list(rest)) for rest in itertools.product(grid, repeat=k - len(partial))}
        seen.add(status)
        if status is Status.PASS:
            assert outcomes == {True}, (partial, k)
        elif status is Status.FAIL:
            assert outcomes == {False}, (partial, k)
        else:
            assert outcomes == {True, False}, (partial, k)
    # the sample exercised decided and undecided cases alike
    assert Status.UNDECIDED in seen and (Status.PASS in seen or Status.FAIL in seen)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_decided_partial_list_decides_the_same_way(name):
    """The loop may call decide() on the runs it drew before an early exit."""
    cfg = CONFIGS[name]
    policy = build_policy(cfg)
    rng = random.Random(name)
    for partial, k, _ in _cases(cfg, rng):
        if not partial:
            continue
        status = policy.weak_status(partial, k)
        if status is Status.FAIL:
            assert policy.decide(partial, []).reason == FailureReason.TOO_EASY
        elif status is Status.PASS:
            assert policy.decide(partial, [1.0]).reason != FailureReason.TOO_EASY


# ---------------------------------------------------------------- registry, groups, loop judge veto
def test_unknown_policy_names_the_known_ones():
    with pytest.raises(ValueError, match="cs_deployed, cs_paper, legal_gap, loop_judge, verifiable"):
        build_policy(AcceptanceConfig(policy="cs_papr"))
    assert set(POLICIES) == {"cs_paper", "cs_deployed", "legal_gap", "loop_judge", "verifiable"}


def test_group_titles():
    assert GROUP_TITLES[FailureReason.TOO_EASY] == "TOO EASY"
    assert GROUP_TITLES[FailureReason.FAILED_ON_STRONG] == "FAILED ON STRONG"
    assert GROUP_TITLES[FailureReason.MALFORMED] == GROUP_TITLES[FailureReason.FAILED_QV] == "FAILED QV"
    assert GROUP_TITLES[FailureReason.LOOP_JUDGE_IMPROVE] == "LOOP JUDGE: IMPROVE"
    assert FailureReason.UNSUITABLE not in GROUP_TITLES and FailureReason.BACKEND_ERROR not in GROUP_TITLES


IMPROVE = {"verdict": "improve", "verdict_reason": "weak answers all fail alike", "suggestion_for_writer": "new facts"}
ACCEPT = {"verdict": "accept", "verdict_reason": "clear reasoning gap"}


def test_legal_gap_lets_the_loop_judge_only_veto():
    accepted = decide(LEGAL_GAP, [0.1] * 5, [0.6] * 3)
    rejected = decide(LEGAL_GAP, [0.6] * 5, [0.9] * 3)
    assert accepted.accepted and not rejected.accepted
    vetoed = apply_loop_judge(accepted, IMPROVE, LEGAL_GAP)
    assert (vetoed.accepted, vetoed.reason) == (False, FailureReason.LOOP_JUDGE_IMPROVE)
    assert "weak answers all fail alike" in vetoed.detail and "suggestion for the writer: new facts" in vetoed.detail
    assert apply_loop_judge(accepted, ACCEPT, LEGAL_GAP) == accepted
    # an accept verdict never rescues a task the framework rule rejected
    assert apply_loop_judge(rejected, ACCEPT, LEGAL_GAP) == rejected
    # a missing verdict is improve
    assert not apply_loop_judge(accepted, {}, LEGAL_GAP).accepted
    off = AcceptanceConfig(policy="legal_gap", require_loop_judge_accept=False)
    assert apply_loop_judge(accepted, IMPROVE, off) == accepted


def test_loop_judge_policy_has_no_threshold_and_the_judge_decides():
    """The paper's legal rule: a task with gap 0.187 (under legal_gap's 0.20) is the judge's to accept."""
    weak, strong = [0.2] * 5, [0.387] * 3
    assert decide(LEGAL_GAP, weak, strong).reason == FailureReason.FAILED_ON_STRONG
    policy = build_policy(LOOP_JUDGE)
    # No criterion can fail, whatever the runs: sampling never stops early and the judge reads every rollout.
    assert policy.weak_status([1.0, 1.0], 5) is Status.PASS and policy.strong_status([0.0], 3, 1.0) is Status.PASS
    framework = policy.decide(weak, strong)
    assert framework.accepted and "gap 0.187" in framework.detail
    assert apply_loop_judge(framework, ACCEPT, LOOP_JUDGE).accepted
    # improve, an unusable verdict (parse_loop_judge makes it improve) and no verdict at all are improve
    for verdict in (IMPROVE, {"verdict": "maybe"}, {}):
        assert apply_loop_judge(framework, verdict, LOOP_JUDGE).reason == FailureReason.LOOP_JUDGE_IMPROVE
    # a hard rule forces improve even when the judge says accept
    forced = apply_loop_judge(framework, ACCEPT, LOOP_JUDGE, ["question is 1200 characters"])
    assert forced.reason == FailureReason.LOOP_JUDGE_IMPROVE and "hard rule: question is 1200 characters" in forced.detail
    with pytest.raises(ValueError, match="graded weak and strong runs"):
        policy.decide(weak, [])


def test_module_doctests():
    import doctest

    import autodata.acceptance

    result = doctest.testmod(autodata.acceptance)
    assert result.failed == 0 and result.attempted > 0
