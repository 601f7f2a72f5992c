"""The inner loop and its extension points against independent computations: MAML's meta-gradient against
central finite differences; a support objective that sees the parameters (iMAML's proximal term), learned
rates (Meta-SGD) and a user-written update rule against plain loops written by hand; first order; per-task
support minibatches (float64, see conftest.py)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metalab.nn.inner_loop import (
    SGD,
    Adam,
    InnerLoop,
    LearnedRates,
    UpdateRule,
    expand_for_tasks,
    select_support,
    support_minibatches,
    task_loss,
)
from metalab.nn.losses import classification_losses
from metalab.nn.reference import task_forward
from networks import assert_gradient_equals_finite_differences, smooth_network, tasks


def forward_of(module: nn.Module, names):
    return lambda params, x: task_forward(module, params, x, names)


def meta_loss(module, params, support, query, loop: InnerLoop):
    names = list(params)
    fast = loop.adapt(forward_of(module, names), params, names, *support, task_loss(classification_losses))
    return classification_losses(task_forward(module, fast, query[0], names), query[1]).mean()


@pytest.mark.parametrize("steps", [1, 5])
def test_meta_gradient_equals_central_finite_differences(steps):
    module = smooth_network()
    params = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
    support, query = tasks(2, 3, 2, seed=1), tasks(2, 3, 3, seed=2)
    loop = InnerLoop(steps=steps, rule=SGD(0.5))
    assert_gradient_equals_finite_differences(lambda moved: meta_loss(module, moved, support, query, loop), params)


def plain_loop(module, theta: dict, x, y, steps: int, direction) -> dict:
    """One task, by hand: phi <- phi - direction(phi, grad) with the module's own loss and autograd."""
    phi = {n: p.detach().clone().requires_grad_() for n, p in theta.items()}
    for _ in range(steps):
        loss = nn.functional.cross_entropy(functional_call(module, phi, (x,)), y)
        grads = dict(zip(phi, torch.autograd.grad(loss, list(phi.values()))))
        phi = {n: (p - direction(n, p, grads[n])).detach().requires_grad_() for n, p in phi.items()}
    return phi


def adapt_each_task(loop: InnerLoop, module, objective, x, y) -> dict:
    params = dict(module.named_parameters())
    return loop.adapt(forward_of(module, list(params)), params, list(params), x, y, objective, create_graph=False)


def test_an_objective_that_sees_the_parameters_adds_its_gradient():
    """iMAML's proximal objective L(phi) + lambda/2 ||phi - theta||^2: each step adds lambda (phi - theta)."""
    module, (x, y) = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), tasks(2, 3, 2)
    theta = {n: p.detach() for n, p in module.named_parameters()}
    lr, lam = 0.3, 2.0

    def proximal(params, outputs, targets):
        distance = sum((params[n] - theta[n]).pow(2).flatten(1).sum(1) for n in theta)
        return classification_losses(outputs, targets) + lam / 2 * distance

    ours = adapt_each_task(InnerLoop(steps=4, rule=SGD(lr)), module, proximal, x, y)
    for t in range(2):
        expected = plain_loop(module, theta, x[t], y[t], 4, lambda n, p, g: lr * (g + lam * (p - theta[n])))
        for name in theta:
            assert torch.allclose(ours[name][t], expected[name], atol=1e-12)


def test_learned_rates_scale_each_entry_and_receive_their_meta_gradient():
    module, (x, y) = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), tasks(2, 3, 2)
    params = dict(module.named_parameters())
    rates = {n: torch.rand(p.shape, requires_grad=True) for n, p in params.items()}
    ours = adapt_each_task(InnerLoop(steps=3, rule=LearnedRates(rates)), module, task_loss(classification_losses), x, y)
    for t in range(2):
        expected = plain_loop(module, params, x[t], y[t], 3, lambda n, p, g: rates[n].detach() * g)
        for name in params:
            assert torch.allclose(ours[name][t], expected[name], atol=1e-12)
    support, query = tasks(2, 3, 2, seed=1), tasks(2, 3, 3, seed=2)
    network = smooth_network()
    theta = {n: p.detach().requires_grad_() for n, p in network.named_parameters()}
    start = {n: torch.full(p.shape, 0.3, requires_grad=True) for n, p in theta.items()}

    def loss_of_rates(moved):
        return meta_loss(network, theta, support, query, InnerLoop(steps=2, rule=LearnedRates(moved)))

    assert_gradient_equals_finite_differences(loss_of_rates, start)


@dataclass
class DiagonalPreconditioner(UpdateRule):
    """A rule written outside metalab: phi <- phi - lr * exp(log_scale) (.) g, a meta-learned diagonal."""

    lr: float
    log_scale: dict

    def tensors(self):
        return dict(self.log_scale)

    def step(self, fast, grads, state, k, tensors):
        return {**fast, **{n: fast[n] - self.lr * tensors[n].exp() * g for n, g in grads.items()}}, None


def test_a_new_update_rule_plugs_in_to_second_order():
    network = smooth_network()
    theta = {n: p.detach().requires_grad_() for n, p in network.named_parameters()}
    support, query = tasks(2, 3, 2, seed=1), tasks(2, 3, 3, seed=2)
    start = {n: torch.zeros(p.shape, requires_grad=True) for n, p in theta.items()}

    def loss_of_scales(moved):
        return meta_loss(network, theta, support, query, InnerLoop(steps=2, rule=DiagonalPreconditioner(0.4, moved)))

    assert_gradient_equals_finite_differences(loss_of_scales, start)
    # at log-scale 0 it is plain SGD
    sgd = meta_loss(network, theta, support, query, InnerLoop(steps=2, rule=SGD(0.4)))
    assert torch.allclose(loss_of_scales(start), sgd, atol=1e-12)


def test_adam_rule_equals_torch_adam_on_each_task():
    module, (x, y) = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), tasks(2, 3, 2)
    ours = adapt_each_task(InnerLoop(steps=3, rule=Adam(0.01, (0.5, 0.99))), module, task_loss(classification_losses),
                           x, y)
    for t in range(2):
        copied = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        copied.load_state_dict(module.state_dict())
        optimizer = torch.optim.Adam(copied.parameters(), lr=0.01, betas=(0.5, 0.99), eps=1e-8)
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(copied(x[t]), y[t]).backward()
            optimizer.step()
        for name, p in copied.named_parameters():
            assert torch.allclose(ours[name][t], p, atol=1e-12)


def test_first_order_gradients_are_constants_of_the_meta_graph():
    module, (x, y) = smooth_network(), tasks(2, 3, 2)
    params = dict(module.named_parameters())
    first = InnerLoop(steps=2, rule=SGD(0.1), first_order=True)
    fast = first.adapt(forward_of(module, list(params)), params, list(params), x, y, task_loss(classification_losses))
    # phi = theta - (constants): d phi / d theta is the identity, per task
    weight = params["0.weight"]
    (grad,) = torch.autograd.grad(fast["0.weight"].sum(), [weight])
    assert torch.equal(grad, torch.full_like(weight, 2.0))


def test_support_minibatches_are_per_task_passes_over_permutations():
    torch.manual_seed(0)
    indices = support_minibatches(tasks=3, size=6, batch=2, steps=7)
    assert [tuple(index.shape) for index in indices] == [(3, 2)] * 7
    for t in range(3):
        first_pass = torch.cat([indices[k][t] for k in range(3)])
        assert sorted(first_pass.tolist()) == list(range(6))  # each pass covers the support set once
    assert not all(torch.equal(indices[0][0], indices[0][t]) for t in range(1, 3))  # tasks draw their own
    x, y = torch.arange(3 * 6).view(3, 6, 1).double(), torch.arange(3 * 6).view(3, 6)
    picked_x, picked_y = select_support(x, y, indices[0])
    assert torch.equal(picked_y, torch.gather(y, 1, indices[0])) and torch.equal(picked_x[..., 0], picked_y.double())


def test_a_stateful_rule_refuses_the_checkpointed_unroll():
    module, (x, y) = smooth_network(), tasks(1, 3, 1)
    params = dict(module.named_parameters())
    loop = InnerLoop(steps=2, rule=Adam(0.1))
    with pytest.raises(ValueError, match="speed.checkpoint_inner_loop=false"):
        loop.adapt(forward_of(module, list(params)), params, list(params), x, y, task_loss(classification_losses),
                   unroll=lambda *args: None)


def test_expand_for_tasks_shares_storage():
    p = torch.randn(3, 2)
    expanded = expand_for_tasks({"w": p, "b": p}, ["w"], 4)
    assert expanded["w"].shape == (4, 3, 2) and expanded["w"].data_ptr() == p.data_ptr()
    assert expanded["b"] is p
