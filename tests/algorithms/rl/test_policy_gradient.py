"""The policy-gradient estimator and TRPO's pieces against exact values."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, Normal

from metalab.algorithms.rl.components.policies import sample
from metalab.algorithms.rl.components.policy_gradient import (
    TRPO,
    fisher_vector_product,
    natural_step,
    reinforce_loss,
    surrogate_loss,
    trpo_update,
)


def test_reinforce_is_unbiased_on_a_two_armed_bandit():
    """J(theta) = sum_a pi_a p_a for softmax pi and Bernoulli arms p; grad_theta_a J = pi_a (p_a - J). The mean of
    many REINFORCE estimates (each from 20 pulls) must be within 4 standard errors of it."""
    logits = torch.tensor([0.3, -0.4], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([0.8, 0.3], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(1000):
        policy = Categorical(logits=logits.expand(1, 20, 2))
        actions = sample(policy, generator)
        rewards = (torch.rand(1, 20, generator=generator, dtype=torch.float64) < p[actions]).double()
        loss = reinforce_loss(policy.log_prob(actions), rewards, torch.ones_like(rewards)).sum()
        estimates.append(-torch.autograd.grad(loss, logits)[0])
    estimates = torch.stack(estimates)
    pi = torch.softmax(logits.detach(), 0)
    exact = pi * (p - (pi * p).sum())
    error = estimates.std(0) / math.sqrt(len(estimates))
    assert ((estimates.mean(0) - exact).abs() < 4 * error).all()
    assert (error < 0.01).all()  # and the check is tight enough to mean something


def test_the_surrogate_has_reinforces_gradient_at_the_old_policy():
    logits = torch.tensor([[0.2, 0.1, -0.3]], dtype=torch.float64, requires_grad=True)
    actions = torch.tensor([[0, 2, 2, 1]])
    advantages = torch.tensor([[1.0, -0.5, 2.0, 0.3]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    log_probs = Categorical(logits=logits.expand(4, 3)).log_prob(actions)
    surrogate = torch.autograd.grad(surrogate_loss(log_probs, log_probs.detach(), advantages, mask).sum(), logits)[0]
    log_probs = Categorical(logits=logits.expand(4, 3)).log_prob(actions)
    reinforce = torch.autograd.grad(reinforce_loss(log_probs, advantages, mask).sum(), logits)[0]
    assert torch.allclose(surrogate, reinforce)


def gaussian_kl_setup():
    """A linear Gaussian policy mean = W o with fixed std sigma: the Fisher matrix of the mean KL w.r.t. vec(W)
    (row-major) is kron(I_A, E[o o^T]) / sigma^2."""
    torch.manual_seed(0)
    observations = torch.randn(50, 3, dtype=torch.float64)
    weight = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    sigma = 0.7
    old = Independent(Normal(observations @ weight.detach().T, sigma), 1)
    new = Independent(Normal(observations @ weight.T, sigma), 1)
    kl = torch.distributions.kl_divergence(old, new).mean()
    fisher = torch.kron(torch.eye(2, dtype=torch.float64), observations.T @ observations / 50) / sigma**2
    return weight, kl, fisher


def test_fisher_vector_products_are_the_exact_fisher_matrix():
    weight, kl, fisher = gaussian_kl_setup()
    fvp = fisher_vector_product(kl, [weight], damping=0.0)
    vector = torch.arange(6, dtype=torch.float64) - 2.5
    assert torch.allclose(fvp(vector), fisher @ vector)


def test_conjugate_gradient_solves_f_x_equals_g_and_scales_to_the_kl_bound():
    weight, kl, fisher = gaussian_kl_setup()
    fvp = fisher_vector_product(kl, [weight], damping=0.0)
    gradient = torch.tensor([0.3, -1.0, 0.5, 2.0, 0.1, -0.7], dtype=torch.float64)
    step = natural_step(gradient, fvp, max_kl=0.01, cg_iters=6)  # 6 iterations: exact for a 6 x 6 system
    direction = torch.linalg.solve(fisher, -gradient)
    scale = math.sqrt(2 * 0.01 / float(direction @ fisher @ direction))
    assert torch.allclose(step, scale * direction, rtol=1e-6)
    assert float(0.5 * step @ fisher @ step) == pytest.approx(0.01)


def test_the_line_search_backtracks_until_the_kl_bound_holds():
    """loss = -x, KL = x^2 / 2 + 10 x^4: the quadratic model gives the full step sqrt(2 delta) = 0.1414, whose
    true KL 0.014 breaks delta = 0.01; 0.8 of it (KL 0.0080) is the first step kept."""
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def objective(graph: bool):
        value = x.clone()
        return -value.sum(), (0.5 * value**2 + 10 * value**4).sum()

    update = trpo_update([x], objective, TRPO(max_kl=0.01))
    assert float(update["step_fraction"]) == pytest.approx(0.8)
    assert float(x.detach()) == pytest.approx(0.8 * math.sqrt(0.02), rel=1e-4)  # rel: TRPO's damping 1e-5
    assert float(update["kl"]) <= 0.01


def test_the_line_search_keeps_the_old_parameters_when_no_step_improves():
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def objective(graph: bool):
        # the gradient says "go right", but every step right costs more than it gains: no step is accepted
        value = x.clone()
        return (-value + 100 * value**2).sum() if float(x.detach()) != 0 else -value.sum(), (0.5 * value**2).sum()

    update = trpo_update([x], objective, TRPO(max_kl=0.01, max_backtracks=3))
    assert float(update["step_fraction"]) == 0.0 and float(x.detach()) == 0.0
