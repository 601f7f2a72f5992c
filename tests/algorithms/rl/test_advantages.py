"""Discounted returns, GAE and the linear feature baseline against hand-computed values and numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metalab.algorithms.rl.components.advantages import (
    baseline_features,
    discounted_returns,
    generalized_advantages,
    linear_baseline,
)

# a 4-step row holding two episodes: the first ends after step 1 (done), the second runs to the row's end
REWARDS = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
DONES = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
VALUES = torch.tensor([0.5, 1.0, -1.0, 2.0], dtype=torch.float64)


def test_discounted_returns_stop_at_the_episode_end():
    # R3 = 4; R2 = 3 + 0.9 * 4; R1 = 2 (its episode ends); R0 = 1 + 0.9 * 2
    assert discounted_returns(REWARDS, DONES, 0.9).tolist() == pytest.approx([2.8, 2.0, 6.6, 4.0])


def test_gae_by_hand_with_an_episode_end_inside_the_row():
    # delta3 = 4 - 2 = 2;  delta2 = 3 + 0.9 * 2 + 1 = 5.8;  delta1 = 2 - 1 = 1 (done: no V(s2));
    # delta0 = 1 + 0.9 * 1 - 0.5 = 1.4;  A3 = 2, A2 = 5.8 + 0.72 * 2, A1 = 1 (done), A0 = 1.4 + 0.72 * 1
    advantages = generalized_advantages(REWARDS, VALUES, DONES, gamma=0.9, lam=0.8)
    assert advantages.tolist() == pytest.approx([2.12, 1.0, 7.24, 2.0])


def test_gae_with_lambda_one_is_the_return_minus_the_value_and_batches_rows():
    rows = torch.stack([REWARDS, REWARDS.flip(0)])
    dones = torch.stack([DONES, DONES.flip(0)])
    values = torch.stack([VALUES, VALUES.flip(0)])
    advantages = generalized_advantages(rows, values, dones, gamma=0.9, lam=1.0)
    assert torch.allclose(advantages, discounted_returns(rows, dones, 0.9) - values)
    # lambda 0: the one-step TD errors
    td = generalized_advantages(REWARDS, VALUES, DONES, gamma=0.9, lam=0.0)
    assert td.tolist() == pytest.approx([1.4, 1.0, 5.8, 2.0])


def test_linear_baseline_is_rllab_ridge_regression_on_each_tasks_valid_steps():
    generator = torch.Generator().manual_seed(0)
    observations = torch.randn(2, 3, 5, 2, generator=generator, dtype=torch.float64)
    returns = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64)
    mask = torch.ones(2, 3, 5, dtype=torch.float64)
    mask[0, 1, 3:] = 0  # an episode that ended after 3 steps
    values = linear_baseline(observations, returns, mask)
    for task in range(2):
        o = observations[task].numpy()
        t = np.arange(5)[None, :, None].repeat(3, 0) / 100.0
        features = np.concatenate([o, o**2, t, t**2, t**3, np.ones_like(t)], -1)
        keep = mask[task].numpy().astype(bool)
        x, y = features[keep], returns[task].numpy()[keep]
        weights = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
        assert values[task].numpy()[keep] == pytest.approx(x @ weights, abs=1e-8)
        assert (values[task].numpy()[~keep] == 0).all()
    assert baseline_features(observations).shape == (2, 3, 5, 8)
