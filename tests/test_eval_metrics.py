"""Golden values of the eval metrics (computed by hand in the comments)."""

from __future__ import annotations

import math

import pytest

from eval.metrics import avg_at_k, best_at_k, mean_at_k, pass_at_k, pass_at_k_one, standard_error, truncation_rate

SCORES = [[0.2, 0.4, 0.6], [1.0, 1.0, 1.0]]


def test_mean_at_k():
    # per-prompt means 0.4 and 1.0 -> 0.7; sd = sqrt(((0.3)^2 + (0.3)^2) / 1) = sqrt(0.18); se = sqrt(0.18 / 2) = 0.3
    est = mean_at_k(SCORES, k=3)
    assert est.value == pytest.approx(0.7)
    assert est.stderr == pytest.approx(0.3)
    assert est.n == 2
    # k=1 uses the first sample of each prompt: (0.2 + 1.0) / 2
    assert mean_at_k(SCORES, k=1).value == pytest.approx(0.6)


def test_best_at_k():
    # per-prompt maxima 0.6 and 1.0 -> 0.8; se = sqrt(((0.2)^2 * 2 / 1) / 2) = 0.2
    est = best_at_k(SCORES, k=3)
    assert est.value == pytest.approx(0.8)
    assert est.stderr == pytest.approx(0.2)
    # best of the first two of the first prompt is 0.4
    assert best_at_k(SCORES, k=2).value == pytest.approx(0.7)


def test_judge_failures_are_left_out_not_zero():
    # The first prompt has one graded sample (0.5) out of three; the second none at all.
    est = mean_at_k([[0.5], []], k=3)
    assert (est.value, est.n) == (0.5, 1)
    assert mean_at_k([[], []], k=3).value is None


def test_avg_at_k_is_binary_mean():
    # (2/4 + 4/4) / 2 = 0.75
    assert avg_at_k([[1, 0, 1, 0], [1, 1, 1, 1]], k=4).value == pytest.approx(0.75)
    with pytest.raises(ValueError, match="binary"):
        avg_at_k([[0.5, 1.0]], k=2)


def test_pass_at_k_unbiased_estimator():
    # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k_one(n=5, c=2, k=2) == pytest.approx(0.7)
    # 1 - C(2,1)/C(3,1) = 1/3
    assert pass_at_k_one(n=3, c=1, k=1) == pytest.approx(1 / 3)
    assert pass_at_k_one(n=4, c=3, k=2) == 1.0
    # prompts: 0.7 and 0.0 -> 0.35; se = sqrt((0.35^2 * 2) / 2) = 0.35
    est = pass_at_k([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0]], k=2)
    assert est.value == pytest.approx(0.35)
    assert est.stderr == pytest.approx(0.35)
    # threshold: rubric scores >= 0.5 pass; 2 of 3 pass -> pass@1 = 2/3
    assert pass_at_k([[0.5, 0.9, 0.1]], k=1, threshold=0.5).value == pytest.approx(2 / 3)
    # a prompt with fewer than k graded samples is left out
    assert pass_at_k([[1, 1, 1], [0]], k=3).n == 1


def test_pass_at_k_uses_each_prompts_graded_count():
    # The first prompt's judge failed on one of four samples: 3 graded, 2 pass; the second has all 4, 1 pass.
    # pass@2: 1 - C(1,2)/C(3,2) = 1 and 1 - C(3,2)/C(4,2) = 1/2 -> 0.75 over both prompts
    scores = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]]
    assert (pass_at_k(scores, k=2).value, pass_at_k(scores, k=2).n) == (pytest.approx(0.75), 2)
    # pass@4 needs 4 graded samples: only the second prompt is used (1 - C(3,4)/C(4,4) = 1)
    assert (pass_at_k(scores, k=4).value, pass_at_k(scores, k=4).n) == (1.0, 1)


def test_truncation_rate():
    # 1 of 4 hit the budget; binomial se = sqrt(0.25 * 0.75 / 4)
    est = truncation_rate(["length", "stop", "stop", "stop"])
    assert est.value == pytest.approx(0.25)
    assert est.stderr == pytest.approx(math.sqrt(0.046875))
    assert truncation_rate([]).value is None


def test_standard_error():
    assert standard_error([0.0, 1.0]) == pytest.approx(0.5)
    assert standard_error([0.3]) == 0.0


def test_module_doctests():
    import doctest

    from eval import metrics, sets, stage

    for module in (metrics, sets, stage):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
