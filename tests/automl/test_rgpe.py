"""RGPE's parts against independent answers: the ranking loss by hand, the closed-form leave-one-
out against refitting without the point, and the weights on known-task models that do or do not
rank the new task's observations correctly."""
from __future__ import annotations

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor

from metalab.automl.rgpe import RGPEOptimiser, fit_gp, leave_one_out, ranking_loss, rgpe_weights


def test_ranking_loss_counts_misordered_pairs():
    y = np.array([1.0, 2.0, 3.0])
    # ordered pairs (j, k) with j != k: a sample in the same order has 0; one swap of the first
    # two mis-orders (0,1) and (1,0): 2; the reversed order mis-orders all 6.
    samples = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 3.0], [3.0, 2.0, 1.0]])
    assert ranking_loss(samples, y).tolist() == [0, 2, 6]


def test_leave_one_out_equals_refitting_without_each_point():
    rng = np.random.default_rng(0)
    x = rng.random((12, 2))
    y = np.sin(3 * x[:, 0]) + x[:, 1]
    gp = fit_gp(x, y)
    mean, std = leave_one_out(gp, y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        refit = GaussianProcessRegressor(gp.kernel_, optimizer=None, normalize_y=False).fit(x[keep], y[keep])
        m, s = refit.predict(x[i : i + 1], return_std=True)
        assert np.isclose(mean[i], m[0], atol=1e-6)
        # both include the white-noise term: the kernel's diagonal carries it
        assert np.isclose(std[i], s[0], rtol=1e-4)


def test_weights_go_to_the_known_task_that_ranks_the_observations_right():
    rng = np.random.default_rng(0)
    y = np.arange(8.0)
    right, wrong = y.copy(), -y  # same order / reversed order, no uncertainty
    weights = rgpe_weights(np.stack([right, wrong]), np.full((2, 8), 1e-6), np.zeros(8), np.full(8, 10.0), y,
                           samples=200, rng=rng)
    assert weights[0] > 0.95 and weights[1] == 0.0
    assert np.isclose(weights.sum(), 1.0)


def test_optimiser_never_repeats_and_starts_from_the_known_tasks_mean():
    rng = np.random.default_rng(1)
    x = rng.random((15, 3))
    base_mean = np.stack([x[:, 0], x[:, 0] + 0.1 * x[:, 1]])
    optimiser = RGPEOptimiser(x, base_mean, np.full_like(base_mean, 0.1), samples=64)
    first = optimiser.propose()
    assert first == int(np.argmax(base_mean.mean(0)))
    seen = []
    for _ in range(10):
        index = optimiser.propose()
        seen.append(index)
        optimiser.observe(index, float(x[index, 0]))
    assert len(set(seen)) == 10
