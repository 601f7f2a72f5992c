"""ABML against closed forms in the linear-Gaussian case: with a linear network and a Gaussian likelihood, the
expected negative log-likelihood under a diagonal Gaussian q and the KL to the prior are closed forms, and so is
the ELBO's gradient; the learner's Monte Carlo meta-objective (many samples) matches the closed-form bound at the
analytically adapted posterior. Also the hyper-prior's density, the predictive mixture and the options' errors."""
from __future__ import annotations

import math

import pytest
import torch
from linear_gaussian import features, linear_tasks, use_linear_network
from torch import nn
from torch.distributions import Gamma, Normal, kl_divergence

from metalab.algorithms.bayesian.abml import ABML

NOISE, BETA = 0.5, 0.7
PRIOR_MEAN = torch.tensor([0.3, -0.2], dtype=torch.float64)
PRIOR_STD = torch.tensor([0.4, 0.6], dtype=torch.float64)


def abml(**options) -> ABML:
    torch.manual_seed(0)
    learner = ABML(ABML.Options(kind="regression", backbone="mlp", ways=1, noise_std=NOISE, kl_weight=BETA,
                                hyper_prior=False, **options), (1,)).double()
    use_linear_network(learner)
    with torch.no_grad():
        learner.network.head.weight.fill_(PRIOR_MEAN[0])
        learner.network.head.bias.fill_(PRIOR_MEAN[1])
    learner.prior_log_std = nn.ParameterList([nn.Parameter(PRIOR_STD[:1].log().view(1, 1).clone()),
                                              nn.Parameter(PRIOR_STD[1:].log().clone())])
    return learner


def negative_elbo(mean, log_std, x, y):
    """E_q[-log N(y; phi^T [x, 1], sigma^2)] + beta KL(q || prior), q = N(mean, exp(log_std)^2), in closed form:
    E_q[(y - phi^T f)^2] = (y - mean^T f)^2 + sum_d f_d^2 s_d^2."""
    f = features(x)
    squared = (y[:, 0] - f @ mean).pow(2) + f.pow(2) @ (2 * log_std).exp()
    nll = (squared / (2 * NOISE**2) + math.log(NOISE) + 0.5 * math.log(2 * math.pi)).sum()
    kl = kl_divergence(Normal(mean, log_std.exp()), Normal(PRIOR_MEAN, PRIOR_STD)).sum()
    return nll + BETA * kl


def closed_form_objective(batch, steps: int, lr: float) -> float:
    """The meta-objective with exact expectations: K steps of gradient descent on the support bound, the query
    bound at the result, averaged over the tasks."""
    total = 0.0
    for t in range(len(batch)):
        mean, log_std = PRIOR_MEAN.clone().requires_grad_(), PRIOR_STD.log().requires_grad_()
        for _ in range(steps):
            grads = torch.autograd.grad(negative_elbo(mean, log_std, batch.support_x[t], batch.support_y[t]),
                                        [mean, log_std])
            mean, log_std = mean - lr * grads[0], log_std - lr * grads[1]
        total += float(negative_elbo(mean, log_std, batch.query_x[t], batch.query_y[t]).detach())
    return total / len(batch)


@pytest.mark.parametrize("steps", [0, 2])
def test_meta_objective_equals_the_closed_form_bound(steps):
    """With 20000 samples the Monte Carlo estimate is within 4 of its standard errors (measured from the samples'
    own query log-likelihoods) of the closed form; the inner steps' Monte Carlo gradients (same sample count) add
    an error of the same order, hence 5 standard errors with inner steps."""
    samples = 20000
    learner = abml(inner_steps=steps, inner_lr=0.02, train_samples=samples)
    batch = linear_tasks(tasks=2, shots=5, queries=4, noise=NOISE, seed=4)
    torch.manual_seed(1)
    loss, outputs = learner.objective(batch)
    assert outputs.shape == (2, samples, 4, 1)
    per_sample = Normal(outputs.detach(), NOISE).log_prob(batch.query_y.unsqueeze(1)).sum((2, 3))  # [T, S]
    standard_error = float(per_sample.var(1).sum().sqrt()) / math.sqrt(samples) / len(batch)
    error = abs(float(loss.detach()) - closed_form_objective(batch, steps, 0.02))
    assert error < (4 if steps == 0 else 5) * standard_error, (error, standard_error)


def test_meta_gradient_reaches_the_prior_through_the_inner_steps():
    learner = abml(inner_steps=1, inner_lr=0.02, train_samples=4)
    learner.meta_step(linear_tasks(tasks=2, shots=5, queries=4, noise=NOISE, seed=5))
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in learner.parameters() if p.requires_grad)


def test_hyper_prior_is_a_normal_on_the_mean_and_a_gamma_on_the_precision():
    learner = abml(hyper_mean_std=2.0, hyper_precision=[2.0, 0.5])
    expected = (Normal(torch.tensor(0.0, dtype=torch.float64), 2.0).log_prob(PRIOR_MEAN).sum()
                + Gamma(torch.tensor(2.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
                .log_prob(PRIOR_STD.pow(-2)).sum())
    assert float(learner.hyper_prior_log_density().detach()) == pytest.approx(float(expected), rel=1e-12)


def test_predictive_distribution_is_a_mixture_of_the_posterior_samples():
    learner = abml(inner_steps=1, inner_lr=0.02, samples=6)
    batch = linear_tasks(tasks=3, shots=5, queries=7, noise=NOISE, seed=6)
    torch.manual_seed(2)
    predictive = learner.predictive_distribution(batch)
    assert predictive.batch_shape == (3, 7) and predictive.event_shape == (1,)
    assert predictive.component_distribution.batch_shape == (3, 7, 6)
    assert torch.allclose(predictive.mixture_distribution.probs, torch.full((3, 7, 6), 1 / 6, dtype=torch.float64))
    torch.manual_seed(2)
    assert torch.allclose(learner.predict(batch), predictive.mean, atol=1e-12)


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="learner.prior_std_init"):
        ABML(ABML.Options(prior_std_init=0.0), (1, 16, 16))
    with pytest.raises(ValueError, match="learner.hyper_precision"):
        ABML(ABML.Options(hyper_precision=[1.0]), (1, 16, 16))
    with pytest.raises(ValueError, match="learner.samples"):
        ABML(ABML.Options(samples=0), (1, 16, 16))


def test_evaluation_under_no_grad_samples_as_with_grad():
    learner = abml(inner_steps=2, inner_lr=0.02, samples=3)
    batch = linear_tasks(tasks=2, shots=5, queries=4, noise=NOISE, seed=13)
    torch.manual_seed(6)
    expected = learner.predict(batch)
    torch.manual_seed(6)
    with torch.no_grad():
        assert torch.allclose(learner.predict(batch), expected, atol=1e-12)
