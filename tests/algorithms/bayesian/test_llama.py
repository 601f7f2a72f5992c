"""LLAMA and its K-FAC Laplace machinery against closed forms: the exact Gauss-Newton matrix of a linear layer
(torch.func Jacobians), the exact posterior of Bayesian linear regression, the log-determinant and samples of a
Kronecker-factored precision against dense linear algebra, and the meta-gradient against finite differences."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from metalab.algorithms.bayesian.llama import LLAMA, LLAMAOptions
from metalab.algorithms.registry import learner_class
from metalab.data.task import Task
from metalab.nn.laplace import KroneckerFactors, gaussian_curvature, kronecker_factors, softmax_curvature


def exact_ggn(layer: nn.Linear, x: torch.Tensor, curvature) -> torch.Tensor:
    """sum_n J_n^T Lambda_n J_n in W~ = [W, b] flattened row by row, J_n from torch.func."""
    w_tilde = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()

    def f(flat: torch.Tensor) -> torch.Tensor:
        matrix = flat.view_as(w_tilde)
        return x @ matrix[:, :-1].T + matrix[:, -1]

    jacobian = torch.func.jacrev(f)(w_tilde.flatten())  # [N, C, P]
    root = curvature(f(w_tilde.flatten()))  # [N, C, K]
    lam = root @ root.transpose(1, 2)
    return torch.einsum("ncp,ncd,ndq->pq", jacobian, lam, jacobian)


def test_kfac_is_the_exact_gauss_newton_of_a_linear_layer(float64_default):
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    x = torch.randn(7, 3)
    # Gaussian likelihood: Lambda constant, so A (x) G is exact for any number of examples
    gaussian = gaussian_curvature(0.5)
    factors = kronecker_factors(layer, dict(layer.named_parameters()), x, gaussian, [""])[""]
    assert torch.allclose(factors.dense(), exact_ggn(layer, x, gaussian), atol=1e-10)
    # softmax: exact for one example (K-FAC's independence assumption holds trivially)
    one = kronecker_factors(layer, dict(layer.named_parameters()), x[:1], softmax_curvature, [""])[""]
    assert torch.allclose(one.dense(), exact_ggn(layer, x[:1], softmax_curvature), atol=1e-10)
    several = kronecker_factors(layer, dict(layer.named_parameters()), x, softmax_curvature, [""])[""]
    assert not torch.allclose(several.dense(), exact_ggn(layer, x, softmax_curvature), atol=1e-3)  # an approximation


def test_kfac_of_a_convolution_sums_over_locations(float64_default):
    """KFC (Grosse & Martens 2016) for a 1x1 convolution is the linear layer's K-FAC over every pixel."""
    torch.manual_seed(1)
    conv, linear = nn.Conv2d(2, 3, 1), nn.Linear(2, 3)
    linear.weight.data.copy_(conv.weight.data[:, :, 0, 0])
    linear.bias.data.copy_(conv.bias.data)
    x = torch.randn(4, 2, 3, 3)

    def summed(outputs: torch.Tensor) -> torch.Tensor:  # a Gaussian likelihood on the sum of the map
        return torch.ones(outputs.shape[0], 1, 1, dtype=outputs.dtype)

    net = nn.Sequential(conv, nn.Flatten(), nn.Linear(27, 1))
    factors = kronecker_factors(net, dict(net.named_parameters()), x, summed, ["0"])["0"]
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 2)
    a = torch.cat([pixels, torch.ones(36, 1)], 1)
    assert torch.allclose(factors.a, a.T @ a, atol=1e-10)
    assert factors.g.shape == (3, 3)


def test_kronecker_log_det_and_samples_match_dense_algebra(float64_default):
    torch.manual_seed(2)
    a, g = torch.randn(4, 6), torch.randn(3, 5)
    factors = KroneckerFactors(a @ a.T, g @ g.T)
    dense = factors.dense() + 0.7 * torch.eye(12)
    assert torch.allclose(factors.log_det(0.7), torch.logdet(dense), atol=1e-10)
    draws = factors.sample(0.7, 40000, torch.Generator().manual_seed(0)).flatten(1)  # [S, out*in], row by row
    covariance = draws.T @ draws / draws.shape[0]
    assert torch.allclose(covariance, torch.linalg.inv(dense), atol=0.03)


def linear_llama(tau: float, sigma: float, inputs: int, outputs: int) -> LLAMA:
    """LLAMA on a single linear layer: Bayesian linear regression with prior N(theta, tau^-1 I), noise sigma."""
    options = LLAMAOptions(kind="regression", backbone="mlp", mlp_hidden=[2], ways=outputs, inner_steps=1000,
                           inner_lr=0.1, prior_precision=tau, noise_std=sigma)
    learner = LLAMA(options, (inputs,)).double()
    learner.network = nn.Sequential(OrderedDict(head=nn.Linear(inputs, outputs))).double()
    return learner


def test_laplace_posterior_is_the_exact_posterior_of_bayesian_linear_regression():
    torch.manual_seed(3)
    tau, sigma, n, inputs, outputs = 2.0, 0.7, 6, 2, 2
    learner = linear_llama(tau, sigma, inputs, outputs)
    x = torch.randn(1, n, inputs, dtype=torch.float64)
    y = torch.randn(1, n, outputs, dtype=torch.float64)
    with torch.enable_grad():
        phi = {k: v.detach() for k, v in learner.adapt_tasks(x, y, training=False).items()}
    factors = learner.curvature(phi, x, training=False, create_graph=False)[0]["head"]
    # closed form: per output, precision P = X~^T X~ / sigma^2 + tau I, mean = P^-1 (X~^T y / sigma^2 + tau theta)
    x_tilde = torch.cat([x[0], torch.ones(n, 1, dtype=torch.float64)], 1)
    precision = x_tilde.T @ x_tilde / sigma**2 + tau * torch.eye(inputs + 1, dtype=torch.float64)
    theta = torch.cat([learner.network.head.weight, learner.network.head.bias[:, None]], 1).detach()
    mean = torch.linalg.solve(precision, (x_tilde.T @ y[0] / sigma**2 + tau * theta.T)).T  # [out, in + 1]
    laplace_mean = torch.cat([phi["head.weight"][0], phi["head.bias"][0, :, None]], 1)
    assert torch.allclose(laplace_mean, mean, atol=1e-9)
    exact = torch.block_diag(*[torch.linalg.inv(precision)] * outputs)  # independent outputs, W~ row by row
    laplace = torch.linalg.inv(factors.dense() + tau * torch.eye(outputs * (inputs + 1), dtype=torch.float64))
    assert torch.allclose(laplace, exact, atol=1e-10)
    # and its predictive: the mixture's mean and variance approach the exact predictive's as draws grow
    learner.options.predictive_samples = 4000
    query = torch.randn(1, 3, inputs, dtype=torch.float64)
    predictive = learner.predictive_distribution(Task(x, y, query, torch.zeros(1, 3, outputs, dtype=torch.float64)))
    q_tilde = torch.cat([query[0], torch.ones(3, 1, dtype=torch.float64)], 1)
    variance = (q_tilde @ torch.linalg.inv(precision) * q_tilde).sum(1, keepdim=True) + sigma**2
    assert torch.allclose(predictive.mean[0], q_tilde @ mean.T, atol=0.03)
    assert torch.allclose(predictive.variance[0], variance.expand(3, outputs), rtol=0.08)


def test_meta_gradient_matches_finite_differences():
    """The ML-LAPLACE objective's gradient (through the inner loop and the curvature's log-determinant)."""
    torch.manual_seed(4)
    options = LLAMAOptions(kind="regression", backbone="mlp", mlp_hidden=[3], ways=1, inner_steps=2, inner_lr=0.1,
                           prior_precision=0.5, logdet_weight=1.0, noise_std=1.0)
    learner = LLAMA(options, (1,)).double()
    x, qx = torch.randn(2, 4, 1, dtype=torch.float64), torch.randn(2, 3, 1, dtype=torch.float64)
    batch = Task(x, torch.sin(x), qx, torch.sin(qx))

    def objective() -> float:
        phi = learner.adapt_tasks(batch.support_x, batch.support_y, training=True)
        query = learner.negative_log_likelihood(learner.query_outputs(phi, qx, training=True), batch.query_y)
        log_det = learner.log_det(learner.curvature(phi, x, training=True, create_graph=True))
        return float((query + 0.5 * log_det / 3).mean().detach())

    learner.zero_grad()
    learner.meta_step(batch)
    weight = learner.network.body.net[0].weight
    analytic = weight.grad.clone()
    numeric = torch.zeros_like(weight)
    for index in range(weight.numel()):
        with torch.no_grad():
            weight.view(-1)[index] += 1e-6
        up = objective()
        with torch.no_grad():
            weight.view(-1)[index] -= 2e-6
        down = objective()
        with torch.no_grad():
            weight.view(-1)[index] += 1e-6
        numeric.view(-1)[index] = (up - down) / 2e-6
    assert torch.allclose(analytic, numeric, atol=1e-6)


def test_predictive_is_a_posterior_average_for_classification():
    torch.manual_seed(5)
    learner = learner_class("llama")(LLAMAOptions(hidden=4, inner_steps=1, laplace_layers="head",
                                                  predictive_samples=3), (1, 28, 28))
    x = torch.rand(2, 3, 1, 28, 28)
    labels = torch.arange(3).expand(2, -1)
    batch = Task(x, labels, torch.rand(2, 4, 1, 28, 28), torch.zeros(2, 4, dtype=torch.long))
    learner.eval()
    predictive = learner.predictive_distribution(batch)
    assert predictive.probs.shape == (2, 4, 3)
    assert torch.allclose(predictive.probs.sum(-1), torch.ones(2, 4, dtype=torch.float64))
    draws = learner.posterior_samples(batch, 3)
    assert torch.allclose(predictive.probs, draws[..., :3].double().softmax(-1).mean(0))
    assert not torch.allclose(draws[0], draws[1])  # distinct posterior draws


@pytest.mark.parametrize("option, value", [("prior_precision", 0.0), ("laplace_layers", "body"),
                                           ("predictive_samples", 0), ("noise_std", -1.0)])
def test_bad_options_name_themselves(option, value):
    with pytest.raises(ValueError, match=f"learner.{option}"):
        LLAMA(LLAMAOptions(hidden=4, **{option: value}), (1, 28, 28))
