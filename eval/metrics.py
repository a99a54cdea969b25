"""Evaluation metrics: pure functions over per-prompt sample scores (paper notes, "Evaluation").

Each takes one list of scores per prompt, in sample order (judge failures
already removed: a sample the judge could not grade is excluded, never scored
0) and returns an ``Estimate``: the value, its standard error over prompts, and
how many prompts it used. mean@k, best@k and avg@k read a prompt's first k
graded samples (all of them when it has fewer); pass@k is the unbiased
estimator over all of a prompt's graded samples and leaves out a prompt with
fewer than k. The standard error is the sample standard deviation (n - 1) of
the per-prompt values divided by sqrt(prompts); 0.0 with fewer than two prompts.

>>> round(mean_at_k([[0.2, 0.4, 0.6], [1.0, 1.0, 1.0]], k=3).value, 6)
0.7
>>> round(best_at_k([[0.2, 0.4, 0.6], [1.0, 1.0, 1.0]], k=3).value, 6)
0.8
>>> round(pass_at_k_one(n=3, c=1, k=2), 4)
0.6667
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

from autodata.scoring import mean


@dataclass(frozen=True)
class Estimate:
    value: Optional[float]
    stderr: Optional[float]
    # Prompts (or completions, for truncation_rate) the value averages
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def standard_error(values: Sequence[float]) -> float:
    """Sample standard deviation / sqrt(n); 0.0 for fewer than two values.

    >>> round(standard_error([0.0, 1.0]), 4)
    0.5
    """
    n = len(values)
    if n < 2:
        return 0.0
    mu = mean(values)
    var = sum((v - mu) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def _over_prompts(scores: Sequence[Sequence[float]], per_prompt: Callable[[Sequence[float]], float]) -> Estimate:
    values = [per_prompt(s) for s in scores if len(s) > 0]
    if not values:
        return Estimate(None, None, 0)
    return Estimate(mean(values), standard_error(values), len(values))


def _first(scores: Sequence[float], k: int) -> Sequence[float]:
    if k < 1:
        raise ValueError(f"k must be >= 1, found {k}")
    return list(scores)[:k]


def mean_at_k(scores: Sequence[Sequence[float]], k: int) -> Estimate:
    """Mean over prompts of the mean of the first k graded sample scores (fewer when a prompt has fewer)."""
    return _over_prompts(scores, lambda s: mean(_first(s, k)))


def best_at_k(scores: Sequence[Sequence[float]], k: int) -> Estimate:
    """Mean over prompts of the best of the first k graded sample scores (of all, when a prompt has fewer)."""
    return _over_prompts(scores, lambda s: max(_first(s, k)))


def is_binary(scores: Sequence[Sequence[float]]) -> bool:
    return all(x in (0.0, 1.0) for s in scores for x in s)


def avg_at_k(scores: Sequence[Sequence[float]], k: int) -> Estimate:
    """mean@k on a binary (correct/wrong) score; raises on a non-binary score.

    >>> avg_at_k([[1.0, 0.0], [1.0, 1.0]], k=2).value
    0.75
    """
    if not is_binary(scores):
        raise ValueError("avg@k needs binary scores (0 or 1, a verifiable domain); use mean@k for rubric scores")
    return mean_at_k(scores, k)


def pass_at_k_one(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt with c correct of n samples: 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k_one(n=5, c=0, k=2), pass_at_k_one(n=5, c=4, k=2)
    (0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; found n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k(scores: Sequence[Sequence[float]], k: int, threshold: float = 1.0) -> Estimate:
    """Mean over prompts of the unbiased pass@k; a sample passes when its score >= threshold.

    Each prompt's n is its own count of graded samples, so a prompt whose judge failed on one sample still
    counts; only a prompt with fewer than k graded samples is left out (the estimator is undefined there), and
    ``Estimate.n`` says how many prompts were used.

    >>> est = pass_at_k([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0]], k=2)
    >>> round(est.value, 4), est.n
    (0.75, 2)
    """
    usable = [s for s in scores if len(s) >= k]
    return _over_prompts(usable, lambda s: pass_at_k_one(len(s), sum(1 for x in s if x >= threshold), k))


def truncation_rate(finish_reasons: Sequence[str]) -> Estimate:
    """Share of completions that hit the token budget (finish_reason == "length"); binomial standard error.

    >>> truncation_rate(["stop", "length", "stop", "stop"]).value
    0.25
    """
    n = len(finish_reasons)
    if n == 0:
        return Estimate(None, None, 0)
    p = sum(1 for r in finish_reasons if r == "length") / n
    return Estimate(p, math.sqrt(p * (1 - p) / n), n)
