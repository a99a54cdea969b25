"""Golden values for the rubric score and the small statistics."""

from __future__ import annotations

import doctest
import importlib

import pytest

from autodata.scoring import (at_least, at_most, below, clamp, count_correct, gap, mean, mean_or_none, pstdev,
                              rubric_score)


@pytest.mark.parametrize(
    "weights,met,expected",
    [
        # all positives met: full marks
        ([5, 3, 2], [True, True, True], 1.0),
        # 5 of 10 positive mass
        ([5, 3, 2], [True, False, False], 0.5),
        # a met penalty subtracts: (5 + 3 - 2) / 8
        ([5, 3, -2], [True, True, True], 0.75),
        # unmet penalty costs nothing
        ([5, 3, -2], [True, True, False], 1.0),
        # (5 - 2) / 8
        ([5, 3, -2], [True, False, True], 0.375),
        # penalties larger than the earned mass clip at 0
        ([4, 4, -10], [True, False, True], 0.0),
        # only penalties met: clipped, never negative
        ([7, -3, -3], [False, True, True], 0.0),
        # the paper's shape: positives 1..10, negatives -1..-10
        ([10, 8, 6, 4, 2, 1, 1, -5, -3, -1], [True, True, False, True, False, False, True, False, True, False], 20 / 32),
    ],
)
def test_rubric_score_golden(weights, met, expected):
    assert rubric_score(weights, met) == pytest.approx(expected, abs=1e-12)


def test_rubric_score_rejects_length_mismatch():
    with pytest.raises(ValueError, match="3 weights but 2 verdicts"):
        rubric_score([1, 2, 3], [True, False])


def test_rubric_score_rejects_rubric_without_positive_weight():
    with pytest.raises(ValueError, match="at least one positive weight"):
        rubric_score([-1, -2], [False, False])
    with pytest.raises(ValueError, match="at least one positive weight"):
        rubric_score([], [])


def test_mean_pstdev_gap_golden():
    assert mean([0.2, 0.4, 0.9]) == pytest.approx(0.5)
    assert pstdev([0.0, 1.0, 0.0, 1.0]) == pytest.approx(0.5)
    assert pstdev([0.7]) == 0.0
    assert gap([0.1, 0.3], [0.8, 0.6]) == pytest.approx(0.5)
    assert clamp(-0.2, 0.0, 1.0) == 0.0


def test_mean_of_nothing_is_an_error_not_zero():
    with pytest.raises(ValueError, match="empty"):
        mean([])


def test_count_correct_only_accepts_binary_scores():
    assert count_correct([1.0, 0.0, 1.0, 1.0]) == 3
    with pytest.raises(ValueError, match="1.0 .correct. or 0.0"):
        count_correct([1.0, 0.5])


def test_threshold_comparisons_absorb_float_noise_only():
    noisy = mean([0.7, 0.7, 0.7]) - mean([0.5, 0.5, 0.5])  # 0.19999999999999996
    assert noisy != 0.2 and at_least(noisy, 0.2)
    assert not at_least(0.2 - 1e-6, 0.2)
    assert below(0.4999, 0.5) and not below(0.5, 0.5)
    assert at_most(0.65 + 1e-12, 0.65) and not at_most(0.651, 0.65)


@pytest.mark.parametrize(
    "module",
    ["autodata.scoring", "autodata.acceptance", "autodata.domains.checks", "autodata.domains.templating",
     "autodata.domains.rubric"],
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_mean_or_none_is_the_one_mean_with_none_for_nothing():
    # Generate's statistics and the loop's round means use it: an ungraded run has no mean, never a fake 0.
    assert mean_or_none([]) is None
    assert mean_or_none([0.25, 0.5, 0.75]) == mean([0.25, 0.5, 0.75]) == 0.5
