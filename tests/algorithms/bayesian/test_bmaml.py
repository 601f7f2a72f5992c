"""BMAML: SVGD's step against the formula on a hand-computed two-particle example and against autograd's kernel
gradient, the median-heuristic bandwidth as stated, and BMAML's SVGD particles against the exact posterior of
Bayesian linear regression as the particles grow; the chaser loss and the predictive mixture."""
from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch
from linear_gaussian import as_vector, linear_tasks, posterior, use_linear_network
from torch import nn

from metalab.algorithms.bayesian.base import SVGD, median_bandwidth, svgd_direction
from metalab.algorithms.bayesian.bmaml import BMAML
from metalab.data.task import Task

NOISE = 0.5


def test_svgd_step_on_two_particles_by_hand():
    """theta_1 = (0, 0), theta_2 = (1, 2), scores (1, 0) and (0, -1). ||theta_1 - theta_2||^2 = 5, so the median
    heuristic gives h = 5 / log 2 and k_12 = exp(-5 / h) = 1/2. With grad_{theta_j} k(theta_j, theta_m) =
    -(2/h)(theta_j - theta_m) k_jm:
        phi_1 = 1/2 [(1, 0) + 1/2 (0, -1) - (2/h)(1/2)(1, 2)] = 1/2 (1 - 1/h, -1/2 - 2/h)
        phi_2 = 1/2 [1/2 (1, 0) + (0, -1) + (1/h)(1, 2)]      = 1/2 (1/2 + 1/h, -1 + 2/h)"""
    theta = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]], dtype=torch.float64)
    score = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
    inv_h = math.log(2) / 5
    expected = 0.5 * torch.tensor([[[1 - inv_h, -0.5 - 2 * inv_h], [0.5 + inv_h, -1 + 2 * inv_h]]], dtype=torch.float64)
    assert torch.allclose(median_bandwidth(theta), torch.tensor([5 / math.log(2)], dtype=torch.float64))
    assert torch.allclose(svgd_direction(theta, score), expected, atol=1e-14)
    # the same step through the update rule, on rows [T * M, ...] split into two tensors; grads = -score
    fast = {"a": theta[0, :, :1], "b": theta[0, :, 1:]}
    grads = {"a": -score[0, :, :1], "b": -score[0, :, 1:]}
    stepped, _ = SVGD(lr=0.1, particles=2).step(fast, grads, None, 0, {})
    assert torch.allclose(torch.cat([stepped["a"], stepped["b"]], 1), theta[0] + 0.1 * expected[0], atol=1e-14)


def test_svgd_direction_equals_the_formula_with_autograds_kernel_gradient():
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    score = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    h = torch.tensor([0.7, 2.0], dtype=torch.float64)
    expected = torch.zeros_like(theta)
    for t in range(2):
        for m in range(4):
            for j in range(4):
                source = theta[t, j].clone().requires_grad_()
                kernel = torch.exp(-(source - theta[t, m]).pow(2).sum() / h[t])
                (kernel_gradient,) = torch.autograd.grad(kernel, source)
                expected[t, m] += (kernel.detach() * score[t, j] + kernel_gradient) / 4
    assert torch.allclose(svgd_direction(theta, score, h), expected, atol=1e-13)


@pytest.mark.parametrize("count", [2, 5, 6])
def test_median_heuristic_bandwidth(count):
    """h = med^2 / log M, med the median of the M (M - 1) / 2 distances between distinct particles."""
    theta = torch.randn(3, count, 4, generator=torch.Generator().manual_seed(count), dtype=torch.float64)
    for t in range(3):
        distances = sorted(float((theta[t, i] - theta[t, j]).norm()) for i, j in combinations(range(count), 2))
        middle = len(distances) // 2
        median = distances[middle] if len(distances) % 2 else (distances[middle - 1] + distances[middle]) / 2
        assert float(median_bandwidth(theta)[t]) == pytest.approx(median**2 / math.log(count), rel=1e-12)
    assert torch.equal(median_bandwidth(theta[:, :1]), torch.ones(3, dtype=torch.float64))


def bmaml(particles: int, **options) -> BMAML:
    torch.manual_seed(0)
    learner = BMAML(BMAML.Options(kind="regression", backbone="mlp", ways=1, particles=particles, noise_std=NOISE,
                                  **options), (1,)).double()
    use_linear_network(learner)
    initial = torch.randn(particles, 2, dtype=torch.float64)  # Theta_0 ~ N(0, I), the prior
    learner.particles = nn.ParameterList([nn.Parameter(initial[:, :1].reshape(particles, 1, 1).clone()),
                                          nn.Parameter(initial[:, 1].reshape(particles, 1).clone())])
    return learner


def test_svgd_particles_approach_the_exact_posterior_as_they_grow():
    """Bayesian linear regression with prior N(0, I) and noise 0.5: after BMAML's SVGD steps on the support set,
    the particles' mean and covariance against the closed-form posterior. With 200 particles the mean is within
    3 standard errors of an i.i.d. sample of that size (sqrt(diag Sigma / 200)) and the covariance within 15% (the
    relative standard error of an i.i.d. sample covariance is about sqrt(2 / 200) = 10%); 10 particles
    underestimate the covariance, as SVGD with few particles does, by much more."""
    task = linear_tasks(tasks=1, shots=8, noise=NOISE, seed=3)
    mean, covariance = posterior(task.support_x[0], task.support_y[0], torch.zeros(2, dtype=torch.float64),
                                 torch.ones(2, dtype=torch.float64), NOISE)
    errors = {}
    for particles in (10, 200):
        learner = bmaml(particles, prior_precision=1.0, inner_lr=0.05, inner_steps_test=400)
        theta = as_vector(learner.chaser(task.support_x, task.support_y, training=False)).detach()  # [M, 2]
        errors[particles] = float((torch.cov(theta.T) - covariance).norm() / covariance.norm())
        if particles == 200:
            assert ((theta.mean(0) - mean).abs() <= 3 * (covariance.diag() / particles).sqrt()).all()
    assert errors[200] < 0.15
    assert errors[10] > 2 * errors[200]


def test_chaser_loss_is_the_distance_to_the_detached_leader():
    """One meta-step: the loss is sum_m ||theta^n_m - theta^{n+s}_m||^2 averaged over tasks, with the leader taken
    s further SVGD steps on support + query; its gradient reaches Theta_0 through the chaser only."""
    learner = bmaml(3, prior_precision=1.0, inner_lr=0.02, inner_steps=2, leader_steps=1)
    batch = linear_tasks(tasks=2, shots=4, queries=3, noise=NOISE, seed=1)
    metrics = learner.meta_step(batch)
    chaser = learner.chaser(batch.support_x, batch.support_y, training=False)
    leader = learner.adapt_from(
        chaser, torch.cat([batch.support_x, batch.query_x], 1).repeat_interleave(3, 0),
        torch.cat([batch.support_y, batch.query_y], 1).repeat_interleave(3, 0), training=False, steps=1)
    distance = (as_vector(chaser) - as_vector(leader)).pow(2).sum(1).view(2, 3).sum(1).mean()
    assert float(metrics["loss"]) == pytest.approx(float(distance.detach()), rel=1e-10)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.particles)


def test_predictive_distribution_is_the_particles_mixture():
    learner = bmaml(4, prior_precision=1.0, inner_lr=0.02, inner_steps_test=3)
    batch = linear_tasks(tasks=2, shots=4, queries=5, seed=2)
    predictive = learner.predictive_distribution(batch)
    assert predictive.batch_shape == (2, 5) and predictive.event_shape == (1,)
    chaser = learner.chaser(batch.support_x, batch.support_y, training=False)
    w, b = chaser["head.weight"].view(2, 4, 1, 1), chaser["head.bias"].view(2, 4, 1, 1)
    means = w * batch.query_x.unsqueeze(1) + b  # [T, M, Q, 1]: each particle's line
    y = torch.zeros(2, 5, 1, dtype=torch.float64)
    log_densities = torch.distributions.Normal(means, NOISE).log_prob(y.unsqueeze(1)).sum(-1)  # [T, M, Q]
    mixture = torch.logsumexp(log_densities, 1) - math.log(4)
    assert torch.allclose(predictive.log_prob(y), mixture, atol=1e-12)
    assert torch.allclose(learner.predict(batch), means.mean(1), atol=1e-12)


def test_classification_predicts_log_mean_probabilities():
    torch.manual_seed(0)
    learner = BMAML(BMAML.Options(ways=3, hidden=4, particles=2, inner_steps=1, inner_lr=0.1), (1, 16, 16)).double()
    x = torch.rand(2, 6, 1, 16, 16, dtype=torch.float64)
    y = torch.arange(3).repeat(2).expand(2, -1)
    batch = Task(x, y, x, y)
    metrics = learner.meta_step(batch)
    assert set(metrics) == {"loss", "accuracy"}
    torch.manual_seed(1)
    logits = learner.predict(batch)
    torch.manual_seed(1)
    probs = learner.predictive_distribution(batch).probs
    assert logits.shape == (2, 6, 3) and torch.allclose(logits.exp(), probs, atol=1e-12)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 6, dtype=torch.float64))


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="learner.particles"):
        BMAML(BMAML.Options(particles=0), (1, 16, 16))
    with pytest.raises(ValueError, match="learner.noise_std"):
        BMAML(BMAML.Options(noise_std=0.0), (1, 16, 16))


def test_evaluation_under_no_grad_equals_evaluation_with_grad():
    learner = bmaml(3, prior_precision=1.0, inner_lr=0.02, inner_steps_test=2)
    batch = linear_tasks(tasks=2, shots=4, queries=5, seed=12)
    expected = learner.predict(batch)
    with torch.no_grad():
        assert torch.allclose(learner.predict(batch), expected, atol=1e-12)


def test_first_order_chaser_loss_reaches_the_initial_particles():
    learner = bmaml(3, prior_precision=1.0, inner_lr=0.02, inner_steps=2, first_order=True)
    learner.meta_step(linear_tasks(tasks=2, shots=4, queries=3, noise=NOISE, seed=1))
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in learner.particles)
