"""PLATIPUS against closed forms in the linear-Gaussian case: with a linear network and the MSE loss, the
gradient steps are affine maps, so the adapted parameters phi are Gaussian under q, E_q MSE(phi, D^test) and the
KL between the two Gaussians are closed forms; the learner's Monte Carlo objective (many samples) matches them.
Also Algorithm 2's prior conditioned on the support set, the predictive mixture and the meta-gradient."""
from __future__ import annotations

import math

import pytest
import torch
from linear_gaussian import features, linear_tasks, use_linear_network
from torch import nn
from torch.distributions import Normal, kl_divergence

from metalab.algorithms.bayesian.platipus import PLATIPUS
from metalab.data.task import Task

MU = torch.tensor([0.3, -0.2], dtype=torch.float64)  # mu_theta = (w, b)
PRIOR_STD = torch.tensor([0.2, 0.3], dtype=torch.float64)  # sigma_theta
Q_STD = torch.tensor([0.15, 0.25], dtype=torch.float64)  # sqrt(v_q)
GAMMA_P, GAMMA_Q = torch.tensor([0.05, 0.08]), torch.tensor([0.03, 0.04])  # per tensor: weight, bias
ALPHA, KL_WEIGHT = 0.1, 0.6


def platipus(**options) -> PLATIPUS:
    torch.manual_seed(0)
    learner = PLATIPUS(PLATIPUS.Options(kind="regression", backbone="mlp", ways=1, inner_lr=ALPHA,
                                        kl_weight=KL_WEIGHT, **options), (1,)).double()
    use_linear_network(learner)
    with torch.no_grad():
        learner.network.head.weight.fill_(MU[0])
        learner.network.head.bias.fill_(MU[1])

    def pair(values, shapes=((1, 1), (1,))):
        return nn.ParameterList(nn.Parameter(v.to(torch.float64).reshape(s).clone()) for v, s in zip(values, shapes))

    learner.prior_log_std, learner.posterior_log_std = pair(PRIOR_STD.log()), pair(Q_STD.log())
    learner.prior_step, learner.posterior_step = pair(GAMMA_P, ((), ())), pair(GAMMA_Q, ((), ()))
    return learner


def mse_gradient(weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad of (1/N) sum (y - phi^T f)^2 at weights [2]: (2/N) F^T (F w - y)."""
    f = features(x)
    return 2 / len(x) * f.T @ (f @ weights - y[:, 0])


def closed_form_objective(batch, steps: int, noise: float | None = None) -> float:
    """E_q MSE(phi, D^test) + kl_weight KL(q || p), averaged over the tasks. K inner steps map theta to
    phi = A^K theta + c_K with A = I - alpha (2/N) F^T F, so phi ~ N(A^K m_q + c_K, A^K V_q A^K^T) and
    E MSE(phi) = MSE(E phi) + tr(F_test Cov(phi) F_test^T) / N_test. With a Gaussian likelihood of std ``noise``
    the query term is E_q -log N(y; phi^T f, noise^2) per point = E MSE / (2 noise^2) + log noise + log(2 pi) / 2."""
    return sum(likelihood_term(mse, noise) + KL_WEIGHT * kl for mse, kl in closed_forms(batch, steps)) / len(batch)


def likelihood_term(expected_mse: float, noise: float | None) -> float:
    if noise is None:
        return expected_mse
    return expected_mse / (2 * noise**2) + math.log(noise) + 0.5 * math.log(2 * math.pi)


def closed_forms(batch, steps: int) -> list[tuple[float, float]]:
    """(E_q MSE(phi, D^test), KL(q || p)) of each task (see :func:`closed_form_objective`)."""
    terms = []
    for t in range(len(batch)):
        xs, ys, xq, yq = batch.support_x[t], batch.support_y[t], batch.query_x[t], batch.query_y[t]
        train, test = mse_gradient(MU, xs, ys), mse_gradient(MU, xq, yq)
        q_mean = MU - GAMMA_Q.double() * (train + test)
        p_mean = MU - GAMMA_P.double() * train
        f = features(xs)
        a = torch.eye(2, dtype=torch.float64) - ALPHA * 2 / len(xs) * f.T @ f
        mean, covariance = q_mean, torch.diag(Q_STD.pow(2))
        for _ in range(steps):
            mean = mean - ALPHA * mse_gradient(mean, xs, ys)
            covariance = a @ covariance @ a.T
        fq = features(xq)
        expected_mse = ((fq @ mean - yq[:, 0]).pow(2).mean() + torch.trace(fq @ covariance @ fq.T) / len(xq))
        kl = kl_divergence(Normal(q_mean, Q_STD), Normal(p_mean, PRIOR_STD)).sum()
        terms.append((float(expected_mse), float(kl)))
    return terms


@pytest.mark.parametrize("steps", [0, 2])
def test_objective_equals_the_closed_form(steps):
    """20000 samples: within 4 standard errors of the Monte Carlo mean (measured from the samples' own query
    MSEs) of the closed form."""
    samples = 20000
    learner = platipus(inner_steps=steps, train_samples=samples)
    batch = linear_tasks(tasks=2, shots=5, queries=4, seed=7)
    torch.manual_seed(1)
    loss, outputs = learner.objective(batch)
    per_sample = (outputs.detach() - batch.query_y.unsqueeze(1)).pow(2).mean((2, 3))  # [T, S]
    standard_error = float(per_sample.var(1).sum().sqrt()) / math.sqrt(samples) / len(batch)
    error = abs(float(loss.detach()) - closed_form_objective(batch, steps))
    assert error < 4 * standard_error, (error, standard_error)


def test_learned_noise_objective_and_its_gradient_equal_the_closed_form():
    """learn_noise: the query term is the Gaussian NLL per point with the learned sigma_y, and its derivative in
    log sigma_y is 1 - E MSE / sigma_y^2 (the closed forms above); the predictive mixture uses that sigma_y."""
    samples, noise = 20000, 0.7
    learner = platipus(inner_steps=1, train_samples=samples, learn_noise=True, noise_std=noise)
    batch = linear_tasks(tasks=2, shots=5, queries=4, seed=7)
    torch.manual_seed(1)
    loss, outputs = learner.objective(batch)
    per_sample = (outputs.detach() - batch.query_y.unsqueeze(1)).pow(2).mean((2, 3)) / (2 * noise**2)  # [T, S]
    standard_error = float(per_sample.var(1).sum().sqrt()) / math.sqrt(samples) / len(batch)
    error = abs(float(loss.detach()) - closed_form_objective(batch, 1, noise))
    assert error < 4 * standard_error, (error, standard_error)
    loss.backward()
    expected_mse = sum(mse for mse, _ in closed_forms(batch, 1)) / len(batch)
    gradient = float(learner.log_noise_std.grad)
    assert abs(gradient - (1 - expected_mse / noise**2)) < 8 * standard_error, gradient
    predictive = learner.predictive_distribution(batch)
    assert torch.allclose(predictive.component_distribution.base_dist.scale,
                          torch.tensor(noise, dtype=torch.float64))


def test_learned_noise_is_refused_for_classification():
    with pytest.raises(ValueError, match="learner.learn_noise"):
        PLATIPUS(PLATIPUS.Options(learn_noise=True), (1, 16, 16))


def test_meta_test_samples_the_prior_conditioned_on_the_support_set():
    """Algorithm 2 with no inner step: theta ~ N(mu - gamma_p grad L(mu, D^tr), sigma_theta^2); the predictions
    are those samples' lines, so their mean and spread at the queries follow from that Gaussian."""
    learner = platipus(inner_steps=0, samples=20000)
    batch = linear_tasks(tasks=1, shots=5, queries=3, seed=8)
    torch.manual_seed(3)
    outputs = learner.sample_outputs(batch)[0, :, :, 0]  # [S, Q]
    p_mean = MU - GAMMA_P.double() * mse_gradient(MU, batch.support_x[0], batch.support_y[0])
    fq = features(batch.query_x[0])
    mean, std = fq @ p_mean, (fq.pow(2) @ PRIOR_STD.pow(2)).sqrt()
    assert torch.allclose(outputs.mean(0), mean, atol=4 * float(std.max()) / math.sqrt(20000))
    assert torch.allclose(outputs.std(0), std, rtol=0.03)  # the sample std's relative error ~ 1 / sqrt(2 S) = 0.5%


def test_meta_gradient_reaches_every_meta_parameter():
    learner = platipus(inner_steps=1, train_samples=3)
    metrics = learner.meta_step(linear_tasks(tasks=2, shots=5, queries=4, seed=9))
    assert set(metrics) == {"loss", "mse"}
    for name, p in learner.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_predictive_distribution_batch_shape_and_mixture():
    learner = platipus(inner_steps=1, samples=4)
    batch = linear_tasks(tasks=3, shots=5, queries=6, seed=10)
    torch.manual_seed(4)
    predictive = learner.predictive_distribution(batch)
    torch.manual_seed(4)
    outputs = learner.sample_outputs(batch).detach()  # the same samples: [T, S, Q, 1]
    assert predictive.batch_shape == (3, 6) and predictive.event_shape == (1,)
    assert torch.allclose(predictive.component_distribution.mean, outputs.movedim(1, 2))
    assert torch.allclose(predictive.mean, outputs.mean(1), atol=1e-12)
    spread = outputs.var(1, unbiased=False) + learner.options.noise_std**2  # the mixture's variance
    assert torch.allclose(predictive.variance, spread, atol=1e-12)


def test_classification_is_a_categorical_of_mean_probabilities():
    torch.manual_seed(0)
    learner = PLATIPUS(PLATIPUS.Options(ways=3, hidden=4, inner_steps=1, inner_lr=0.1, samples=3),
                       (1, 16, 16)).double()
    x = torch.rand(2, 6, 1, 16, 16, dtype=torch.float64)
    y = torch.arange(3).repeat(2).expand(2, -1)
    batch = Task(x, y, x, y)
    assert set(learner.meta_step(batch)) == {"loss", "accuracy"}
    torch.manual_seed(5)
    probs = learner.predictive_distribution(batch).probs
    torch.manual_seed(5)
    outputs = learner.sample_outputs(batch).detach()
    assert torch.allclose(probs, outputs.softmax(-1).mean(1), atol=1e-12)
    torch.manual_seed(5)
    assert torch.allclose(learner.predict(batch).exp(), probs, atol=1e-12)


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="learner.std_init"):
        PLATIPUS(PLATIPUS.Options(std_init=-1.0), (1, 16, 16))
    with pytest.raises(ValueError, match="learner.kl_weight"):
        PLATIPUS(PLATIPUS.Options(kl_weight=-1.0), (1, 16, 16))



def test_evaluation_under_no_grad_samples_as_with_grad():
    learner = platipus(inner_steps=2, samples=3)
    batch = linear_tasks(tasks=2, shots=5, queries=4, seed=11)
    torch.manual_seed(6)
    expected = learner.predict(batch)
    torch.manual_seed(6)
    with torch.no_grad():
        assert torch.allclose(learner.predict(batch), expected, atol=1e-12)


def test_first_order_meta_gradient_still_reaches_the_prior():
    """First order: the inner gradients are constants, so d phi / d theta = I and the query loss still reaches
    mu_theta through q's sample; first- and second-order meta-gradients differ but both are non-zero."""
    batch = linear_tasks(tasks=2, shots=5, queries=4, seed=14)
    grads = {}
    for first_order in (False, True):
        learner = platipus(inner_steps=2, train_samples=3, first_order=first_order)
        torch.manual_seed(7)
        learner.meta_step(batch)
        grads[first_order] = learner.network.head.weight.grad.clone()
    assert float(grads[True].abs().sum()) > 0 and not torch.allclose(grads[True], grads[False])
