"""PMF recovers a low-rank matrix with missing entries (synthetic, known answer), and its optimiser
behaves as Fusi et al. (2018) describe."""
from __future__ import annotations

import numpy as np

from metalab.automl.pmf import PMFOptimiser, expected_improvement, factorise, new_row_posterior


def low_rank(n: int = 60, m: int = 40, rank: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, rank)) @ rng.normal(size=(rank, m)) + rng.normal(size=m)[None, :]


def test_recovers_missing_entries_of_a_rank_3_matrix_within_5_percent_of_its_spread():
    Y = low_rank()
    missing = np.random.default_rng(1).random(Y.shape) < 0.3
    observed = np.where(missing, np.nan, Y)
    model = factorise(observed, rank=3, l2=0.01, iterations=200)
    rmse = np.sqrt(np.mean((model.reconstruct() - Y)[missing] ** 2))
    assert rmse < 0.05 * Y.std(), (rmse, Y.std())


def test_new_row_posterior_predicts_the_unseen_entries_from_a_few_observed_ones():
    Y = low_rank(seed=2)
    model = factorise(Y[:-1], rank=3, l2=0.01, iterations=200)
    new = Y[-1]
    seen = [0, 5, 10, 15, 20, 25, 30, 35]  # 8 entries for 4 unknowns (bias + rank 3)
    mean, std = new_row_posterior(model, seen, new[seen], prior_scale=10.0)
    unseen = np.setdiff1d(np.arange(len(new)), seen)
    assert np.sqrt(np.mean((mean[unseen] - new[unseen]) ** 2)) < 0.05 * new.std()
    assert (std > 0).all()


def test_expected_improvement_closed_form_at_zero_distance():
    # mu = best: EI = sigma * phi(0) = sigma / sqrt(2 pi)
    assert np.isclose(expected_improvement(np.array([1.0]), np.array([2.0]), 1.0)[0], 2.0 / np.sqrt(2 * np.pi))


def test_optimiser_starts_with_the_best_configuration_on_average_and_never_repeats():
    scores = 0.5 + 0.1 * np.tanh(low_rank(30, 20, 2, seed=3))
    optimiser = PMFOptimiser(scores, rank=2)
    first = optimiser.propose()
    centred = scores - scores.mean(1, keepdims=True)
    assert first == int(np.argmax(centred.mean(0)))
    target = scores[0]
    seen = []
    for _ in range(20):
        index = optimiser.propose()
        seen.append(index)
        optimiser.observe(index, target[index])
    assert sorted(seen) == list(range(20))
