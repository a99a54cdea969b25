"""Per-row decoding pieces: seeded sampling, top-p, greedy rows, token budgets."""

from __future__ import annotations

import doctest

import torch

from autodata.backends import hf_decoding
from autodata.backends.hf_decoding import RowSampler, RowTokenBudget


def test_module_doctest():
    assert doctest.testmod(hf_decoding).failed == 0


def picks(sampler: RowSampler, logits: torch.Tensor, steps: int) -> list[list[int]]:
    rows: list[list[int]] = [[] for _ in range(logits.shape[0])]
    for _ in range(steps):
        scores = sampler(torch.zeros(logits.shape[0], 1, dtype=torch.long), logits.clone())
        for i, token in enumerate(scores.argmax(-1).tolist()):
            rows[i].append(token)
            # One-hot: the chosen token is 0, everything else -inf.
            assert scores[i, token] == 0 and torch.isinf(scores[i]).sum() == logits.shape[1] - 1
    return rows


def test_greedy_rows_top_p_and_seeds():
    logits = torch.tensor([[0.0, 1.0, 5.0, 2.0]] * 4)
    # row 0 greedy; row 1 nucleus 0.5 holds only the top token (p~0.94); rows 2-3 free, same seed
    sampler = RowSampler([0.0, 1.0, 5.0, 5.0], [1.0, 0.5, 1.0, 1.0], [1, 2, 3, 3], device="cpu")
    greedy, nucleus, free_a, free_b = picks(sampler, logits, 200)
    assert set(greedy) == {2} and set(nucleus) == {2}
    assert free_a == free_b  # same seed, same stream, whatever the row
    assert set(free_a) == {0, 1, 2, 3}  # temperature 5 flattens the distribution


def test_token_budget_is_per_row():
    budget = RowTokenBudget(prompt_width=3, max_new=[1, 2], device="cpu")
    assert budget(torch.zeros(2, 4, dtype=torch.long), None).tolist() == [True, False]
    assert budget(torch.zeros(2, 5, dtype=torch.long), None).tolist() == [True, True]
