"""Parent selection: Boltzmann sampling over the population's validation scores (the paper's T = 0.1)."""

from __future__ import annotations

import math
import random
from typing import Sequence


def boltzmann_probabilities(scores: Sequence[float], temperature: float) -> list[float]:
    """P(i) proportional to exp(score_i / T), computed stably (the largest exponent is subtracted first).

    >>> [round(p, 4) for p in boltzmann_probabilities([0.5, 0.6], 0.1)]
    [0.2689, 0.7311]
    >>> boltzmann_probabilities([0.3, 0.3, 0.3], 0.1)
    [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    if not scores:
        raise ValueError("cannot draw a parent from an empty population")
    if temperature <= 0:
        raise ValueError(f"the Boltzmann temperature must be > 0, got {temperature}")
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def boltzmann_pick(scores: Sequence[float], temperature: float, rng: random.Random) -> int:
    """The index of one parent drawn with ``boltzmann_probabilities``.

    >>> boltzmann_pick([0.0, 10.0], 0.1, random.Random(0))
    1
    """
    probabilities = boltzmann_probabilities(scores, temperature)
    return rng.choices(range(len(probabilities)), weights=probabilities, k=1)[0]
