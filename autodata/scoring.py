"""Pure scoring arithmetic: the rubric score of one answer and small statistics.

Everything here is a plain function of numbers, so the acceptance rule, the
generate loop's records, the GRPO reward and eval all share one definition.

The rubric score is the PRBench-style "clipped" score of the paper (notes:
"CS domain"): weights are signed, a negative criterion that is *met* means the
bad behaviour is present and subtracts, and the result is normalised by the
positive weight mass only, then clipped into [0, 1].

>>> rubric_score([5, 3, -2], [True, False, True])
0.375
>>> mean([0.25, 0.5, 0.75])
0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

# Tolerance of threshold comparisons. Means of floats such as 0.7 land a few
# ulps off the value a person reads (0.7 + 0.7 + 0.7 = 2.0999999999999996), and
# "exactly at the threshold" must behave the same whichever way the rounding
# fell. 1e-9 is far below any score difference that means anything.
EPS = 1e-9


def rubric_score(weights: Sequence[float], met: Sequence[bool]) -> float:
    """Clipped weighted score of one answer.

    score = clamp(sum_i w_i * met_i / sum_{w_i > 0} w_i, 0, 1)

    >>> rubric_score([10, 5, 5], [True, True, False])
    0.75
    >>> rubric_score([4, 4, -10], [True, False, True])   # penalty outweighs: clipped
    0.0
    >>> rubric_score([2, 2, -1], [True, True, False])
    1.0
    """
    if len(weights) != len(met):
        raise ValueError(
            f"rubric_score got {len(weights)} weights but {len(met)} verdicts; "
            "the judge must return exactly one verdict per rubric criterion"
        )
    positive_mass = math.fsum(w for w in weights if w > 0)
    if positive_mass <= 0:
        raise ValueError(
            f"rubric_score needs at least one positive weight, found weights {list(weights)}; "
            "a rubric of penalties only cannot be normalised (reject it in the structural check)"
        )
    earned = math.fsum(w for w, m in zip(weights, met) if m)
    return clamp(earned / positive_mass, 0.0, 1.0)


def clamp(x: float, lo: float, hi: float) -> float:
    """Limit x to [lo, hi].

    >>> clamp(1.5, 0.0, 1.0)
    1.0
    """
    return max(lo, min(hi, x))


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean; fsum keeps it exact enough to be order independent.

    >>> mean([1.0, 0.0, 0.0, 1.0])
    0.5
    """
    if len(xs) == 0:
        raise ValueError("mean of an empty list is undefined; pass at least one score")
    return math.fsum(xs) / len(xs)


def mean_or_none(xs: Sequence[float]) -> Optional[float]:
    """``mean``, or None when there is nothing to average: a run with no graded score has no mean (never a
    fake 0).

    >>> mean_or_none([0.0, 1.0]), mean_or_none([])
    (0.5, None)
    """
    return mean(xs) if len(xs) else None


def pstdev(xs: Sequence[float]) -> float:
    """Population standard deviation (the spread of one prompt's rollouts).

    Zero spread is exactly the case where GRPO's group-relative advantage is
    zero and the prompt teaches nothing.

    >>> pstdev([0.0, 1.0])
    0.5
    >>> pstdev([0.3, 0.3, 0.3])
    0.0
    """
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / len(xs))


def gap(weak: Sequence[float], strong: Sequence[float]) -> float:
    """Strong mean minus weak mean: the separation a task buys.

    >>> round(gap([0.2, 0.4], [0.9, 0.7]), 6)
    0.5
    """
    return mean(strong) - mean(weak)


def count_correct(scores: Sequence[float]) -> int:
    """Number of correct runs of a verifiable task (scores are exactly 1.0 or 0.0).

    >>> count_correct([1.0, 0.0, 1.0])
    2
    """
    bad = [s for s in scores if s not in (0.0, 1.0)]
    if bad:
        raise ValueError(
            f"verifiable scores must be 1.0 (correct) or 0.0 (wrong), found {bad}; "
            "use the verifiable policy only with the equivalence judge"
        )
    return sum(1 for s in scores if s == 1.0)


def at_least(x: float, threshold: float) -> bool:
    """x >= threshold, with float noise at the threshold counted as equal.

    >>> at_least(0.7 + 0.7 + 0.7 - 1.9, 0.2)
    True
    """
    return x >= threshold - EPS


def below(x: float, threshold: float) -> bool:
    """x < threshold, with float noise at the threshold counted as equal (so False).

    >>> below(0.1 + 0.2, 0.3)
    False
    """
    return not at_least(x, threshold)


def at_most(x: float, threshold: float) -> bool:
    """x <= threshold, with float noise at the threshold counted as equal.

    >>> at_most(0.1 + 0.2, 0.3)
    True
    """
    return x <= threshold + EPS


def above(x: float, threshold: float) -> bool:
    """x > threshold, with float noise at the threshold counted as equal (so False)."""
    return not at_most(x, threshold)
