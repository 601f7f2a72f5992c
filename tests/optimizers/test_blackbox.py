"""The RNN black-box optimizer of Chen et al. 2017: the GP prior's samples have the RBF covariance, the proposals
are a deterministic function of the seed, and the observed-improvement loss is its definition on a hand example."""
from __future__ import annotations

import math

import pytest
import torch

from metalab.optimizers.blackbox import (
    RNNSearch,
    meta_train_search,
    observed_improvement_loss,
    random_search,
    sample_gp_functions,
    simple_regret,
)


def test_observed_improvement_loss_on_a_hand_example():
    # y = 3, 1, 2, 0: t=2: min(1 - 3, 0) = -2; t=3: min(2 - 1, 0) = 0; t=4: min(0 - 1, 0) = -1 -> -3
    # y = 1, 1, 5:    t=2: 0; t=3: 0 -> 0; the batch mean is -1.5
    values = torch.tensor([[3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 5.0, 7.0]])
    assert float(observed_improvement_loss(values)) == pytest.approx(-1.5)
    assert simple_regret(values, torch.tensor([-1.0, 0.5])).tolist() == [[4.0, 2.0, 2.0, 1.0], [0.5, 0.5, 0.5, 0.5]]


def test_proposals_are_seeded_and_deterministic():
    f = sample_gp_functions(3, 2, seed=9)
    runs = []
    for _ in range(2):
        torch.manual_seed(4)
        net = RNNSearch(2, hidden=8)
        with torch.no_grad():
            runs.append(net(f, len(f), 6, black_box=True))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    points, values = runs[0]
    assert points.shape == (3, 6, 2) and ((points >= 0) & (points <= 1)).all()
    torch.testing.assert_close(values, f(points))  # each value is the function at its proposal
    assert not torch.equal(points[:, 0], points[:, 1])  # the next proposal reads the last value


def test_gp_samples_have_the_rbf_covariance():
    """Across many functions: Var f(x) = 1 and Cov(f(x), f(x')) = exp(-||x - x'||^2 / (2 l^2))."""
    f = sample_gp_functions(4000, 2, seed=1, length_scale=0.3, dtype=torch.float64)
    x = torch.tensor([[0.2, 0.2], [0.4, 0.3]], dtype=torch.float64).expand(4000, 2, 2)
    values = f(x)  # [B, 2]
    covariance = torch.cov(values.T)
    expected = math.exp(-(0.2**2 + 0.1**2) / (2 * 0.3**2))
    assert float(covariance[0, 0]) == pytest.approx(1.0, abs=0.08)
    assert float(covariance[0, 1]) == pytest.approx(expected, abs=0.08)


def test_the_estimated_minimum_is_below_every_query_and_meta_training_stays_finite():
    f = sample_gp_functions(4, 2, seed=2)
    minimum = f.minimum(candidates=512, refine=20)
    assert (minimum.unsqueeze(1) <= random_search(f, 50, seed=0) + 1e-6).all()
    net, history = meta_train_search(2, steps=5, iterations=8, batch=8, hidden=8, lr=1e-2)
    assert all(math.isfinite(v) for v in history) and isinstance(net, RNNSearch)
