"""iMAML against closed forms: on linear regression tasks the proximal inner problem has the ridge solution
phi* = (2/n X^T X + lambda I)^-1 (2/n X^T y + lambda theta), and the exact meta-gradient is the gradient of the
query loss at phi*(theta) (autograd through the closed form, no implicit differentiation); the Hessian-vector
products equal finite differences of gradients; the options refuse what would break."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from metalab.algorithms.gradient.imaml import IMAML
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions
from metalab.nn.implicit import hessian_vector_product

FEATURES, SHOTS, QUERIES, LAMBDA = 3, 6, 5, 1.5


def regression_tasks(count: int, seed: int = 0) -> Task:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, SHOTS + QUERIES, FEATURES, generator=generator, dtype=torch.float64)
    w = torch.randn(count, FEATURES, 1, generator=generator, dtype=torch.float64)
    y = x @ w + 0.1 * torch.randn(count, SHOTS + QUERIES, 1, generator=generator, dtype=torch.float64)
    return Task(x[:, :SHOTS], y[:, :SHOTS], x[:, SHOTS:], y[:, SHOTS:])


def linear_learner(**options) -> IMAML:
    """iMAML on a linear model y = x w + b (the network's head alone), float64, reference engine."""
    torch.manual_seed(0)
    defaults = dict(kind="regression", backbone="mlp", mlp_hidden=[2], ways=1, inner_steps=600, inner_lr=0.15,
                    prox_lambda=LAMBDA, cg_steps=FEATURES + 1, cg_tolerance=0.0)
    learner = IMAML(IMAML.Options(**{**defaults, **options}), (FEATURES,), SpeedOptions(engine="reference"))
    learner.network = nn.Sequential(OrderedDict(head=nn.Linear(FEATURES, 1)))
    return learner.double()


def with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], -1)


def exact_meta_gradient(theta: torch.Tensor, tasks: Task) -> tuple[torch.Tensor, torch.Tensor]:
    """d/d theta of (1/T) sum_t L_query_t(phi*_t(theta)) through the ridge closed form, and phi* [T, D+1]."""
    theta = theta.clone().requires_grad_()
    xs, xq = with_bias(tasks.support_x), with_bias(tasks.query_x)
    eye = torch.eye(FEATURES + 1, dtype=theta.dtype)
    system = 2 / SHOTS * xs.transpose(1, 2) @ xs + LAMBDA * eye
    phi = torch.linalg.solve(system, 2 / SHOTS * xs.transpose(1, 2) @ tasks.support_y + LAMBDA * theta[:, None])
    loss = (xq @ phi - tasks.query_y).pow(2).mean((1, 2)).mean()
    return torch.autograd.grad(loss, theta)[0], phi.squeeze(-1).detach()


def flat_gradient(learner: IMAML) -> torch.Tensor:
    head = learner.network.get_submodule("head")
    return torch.cat([head.weight.grad.flatten(), head.bias.grad])


def flat_theta(learner: IMAML) -> torch.Tensor:
    head = learner.network.get_submodule("head")
    return torch.cat([head.weight.detach().flatten(), head.bias.detach()])


@pytest.mark.parametrize("solver", [
    {},  # gradient descent to convergence
    # one Newton step with CG run to convergence is the minimiser of a quadratic (and the line search accepts it)
    {"inner_solver": "hessian-free", "inner_steps": 1, "inner_cg_steps": FEATURES + 1},
])
def test_the_inner_solver_reaches_the_ridge_solution_and_the_implicit_gradient_is_exact(solver):
    learner, tasks = linear_learner(**solver), regression_tasks(3)
    expected, phi_star = exact_meta_gradient(flat_theta(learner), tasks)
    phi = learner.adapt_tasks(tasks.support_x, tasks.support_y, training=True)
    ours_phi = torch.cat([phi["head.weight"].flatten(1), phi["head.bias"]], 1)
    assert float((ours_phi - phi_star).abs().max()) < 1e-12
    learner.meta_step(tasks)
    assert float((flat_gradient(learner) - expected).abs().max()) <= 1e-8
    assert float(expected.abs().max()) > 1e-2


def test_with_few_cg_steps_the_error_is_bounded_by_the_residual_and_shrinks():
    """A = I + H / lambda has eigenvalues >= 1, so ||v_k - A^-1 g|| <= ||g - A v_k||; CG's error decreases."""
    tasks = regression_tasks(1, seed=3)
    learner = linear_learner()
    expected, phi_star = exact_meta_gradient(flat_theta(learner), tasks)
    xs, xq = with_bias(tasks.support_x[0]), with_bias(tasks.query_x[0])
    system = torch.eye(FEATURES + 1, dtype=torch.float64) + 2 / SHOTS * xs.T @ xs / LAMBDA
    query_gradient = 2 / QUERIES * xq.T @ (xq @ phi_star[0] - tasks.query_y[0, :, 0])
    errors = []
    for steps in range(1, FEATURES + 2):
        learner = linear_learner(cg_steps=steps)
        learner.meta_step(tasks)
        v = flat_gradient(learner)
        errors.append(float((v - expected).norm()))
        assert errors[-1] <= float((query_gradient - system @ v).norm()) * (1 + 1e-9) + 1e-12
    assert all(later < earlier for earlier, later in zip(errors, errors[1:-1]))
    assert errors[0] > 1e-4 and errors[-1] < 1e-8


def test_cg_damping_solves_the_damped_system():
    tasks = regression_tasks(1, seed=5)
    learner = linear_learner(cg_damping=0.5)
    _, phi_star = exact_meta_gradient(flat_theta(learner), tasks)
    xs, xq = with_bias(tasks.support_x[0]), with_bias(tasks.query_x[0])
    system = 1.5 * torch.eye(FEATURES + 1, dtype=torch.float64) + 2 / SHOTS * xs.T @ xs / LAMBDA
    query_gradient = 2 / QUERIES * xq.T @ (xq @ phi_star[0] - tasks.query_y[0, :, 0])
    learner.meta_step(tasks)
    assert torch.allclose(flat_gradient(learner), torch.linalg.solve(system, query_gradient), atol=1e-9)


def test_hessian_vector_products_of_the_support_loss_equal_finite_differences():
    """On a small Conv-4 (transductive BatchNorm, float64): H v against (grad(phi + e v) - grad(phi - e v)) / 2e."""
    torch.manual_seed(0)
    learner = IMAML(IMAML.Options(ways=2, hidden=3, inner_steps=1), (1, 16, 16)).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 4, 1, 16, 16, generator=generator, dtype=torch.float64)
    y = torch.tensor([[0, 1, 0, 1]] * 2)
    phi = learner.adapt_tasks(x, y, training=True)
    vector = {name: torch.randn(value.shape, generator=generator, dtype=torch.float64) for name, value in phi.items()}

    def support_loss(params):
        return learner.loss_fn(learner.network_forward(params, x, training=True), y).sum()

    def gradient(params):
        leaves = {name: value.clone().requires_grad_() for name, value in params.items()}
        return dict(zip(leaves, torch.autograd.grad(support_loss(leaves), list(leaves.values()))))

    ours = hessian_vector_product(support_loss, phi, vector)
    eps = 1e-5
    plus = gradient({name: phi[name] + eps * vector[name] for name in phi})
    minus = gradient({name: phi[name] - eps * vector[name] for name in phi})
    for name in phi:
        difference = (plus[name] - minus[name]) / (2 * eps)
        assert torch.allclose(ours[name], difference, atol=1e-7, rtol=1e-5), name
    assert max(float(value.abs().max()) for value in ours.values()) > 1e-3


def test_meta_step_memory_path_keeps_parameters_and_predicts():
    """The meta-step leaves theta unchanged, fills every gradient, and prediction adapts with the proximal term."""
    torch.manual_seed(0)
    learner = IMAML(IMAML.Options(ways=2, hidden=3, inner_steps=3, inner_lr=0.1), (1, 16, 16)).double()
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(2, 4, 1, 16, 16, generator=generator, dtype=torch.float64)
    y = torch.tensor([[0, 1, 0, 1]] * 2)
    before = {name: p.detach().clone() for name, p in learner.named_parameters()}
    metrics = learner.meta_step(Task(x, y, x, y))
    assert set(metrics) == {"loss", "accuracy"}
    for name, p in learner.named_parameters():
        assert torch.equal(p.detach(), before[name]) and p.grad is not None and torch.isfinite(p.grad).all(), name
    assert learner.predict(Task(x, y, x, y)).shape == (2, 4, 2)


@pytest.mark.parametrize("option, value, message", [
    ("prox_lambda", 0.0, "prox_lambda"), ("cg_steps", -1, "cg_steps"), ("cg_tolerance", -1.0, "cg_tolerance"),
    ("cg_damping", -0.5, "cg_damping"), ("inner_solver", "adam", "inner_solver"), ("first_order", True, "cg_steps=0"),
    ("inner_cg_steps", 0, "inner_cg_steps"),
])
def test_bad_options_are_refused_naming_the_option(option, value, message):
    with pytest.raises(ValueError, match=message):
        IMAML(IMAML.Options(**{option: value}), (1, 28, 28))


def test_a_truncated_hessian_free_step_still_decreases_the_proximal_objective():
    """With one CG iteration the direction is a scaled -gradient; the line search keeps only decreasing steps."""
    torch.manual_seed(0)
    learner = IMAML(IMAML.Options(ways=2, hidden=3, inner_steps=2, inner_solver="hessian-free", inner_cg_steps=1),
                    (1, 16, 16)).double()
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(2, 4, 1, 16, 16, generator=generator, dtype=torch.float64)
    y = torch.tensor([[0, 1, 0, 1]] * 2)
    theta = learner.parameters_by_name()

    def proximal(params):
        return learner.support_objective()(params, learner.network_forward(params, x, training=True), y)

    with torch.no_grad():
        start = proximal({n: v.expand(2, *v.shape) for n, v in theta.items()})
        end = proximal(learner.adapt_tasks(x, y, training=True))
    assert bool((end < start).all())
