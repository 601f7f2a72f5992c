"""InnerLoop.grad_clip: each task's clipped step against torch.nn.utils.clip_grad_norm_ + torch.optim on that
task alone (SGD and Adam), and the second-order meta-gradient through the clipping against central finite
differences (float64, see conftest.py)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metalab.nn.inner_loop import SGD, Adam, InnerLoop, task_loss
from metalab.nn.losses import classification_losses, regression_losses
from metalab.nn.reference import task_forward
from networks import assert_gradient_equals_finite_differences, smooth_network, tasks

TASKS, POINTS, STEPS, LR = 4, 6, 4, 0.05


def regression_network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))


def regression_tasks() -> tuple[torch.Tensor, torch.Tensor]:
    """Sinusoid-like tasks [T, N, 1] whose amplitudes (0.5 to 5) give gradients of very different lengths."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(TASKS, POINTS, 1, generator=generator) * 10 - 5
    amplitude = torch.tensor([0.5, 2.0, 3.5, 5.0]).view(TASKS, 1, 1)
    return x, amplitude * torch.sin(x)


def adapt_alone(network: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: str, clip: float
                ) -> tuple[dict[str, torch.Tensor], list[float]]:
    """One task with torch's own clipping and optimiser: its adapted weights and each step's unclipped norm."""
    task_network = copy.deepcopy(network)
    if optimizer == "sgd":
        step = torch.optim.SGD(task_network.parameters(), lr=LR)
    else:
        step = torch.optim.Adam(task_network.parameters(), lr=LR, betas=(0.0, 0.999), eps=1e-8)
    norms = []
    for _ in range(STEPS):
        step.zero_grad()
        nn.functional.mse_loss(task_network(x), y).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(task_network.parameters(), clip)))
        step.step()
    return {name: p.detach() for name, p in task_network.named_parameters()}, norms


def adapt(loop: InnerLoop, network: nn.Module, x, y, loss_fn, params=None, create_graph=None):
    params = dict(network.named_parameters()) if params is None else params
    return loop.adapt(lambda p, inputs: task_forward(network, p, inputs, list(params)), params, list(params), x, y,
                      task_loss(loss_fn), create_graph=create_graph)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_each_task_is_clipped_as_clip_grad_norm_would_alone(optimizer):
    network = regression_network()
    x, y = regression_tasks()
    clip = 4.0
    rule = SGD(LR) if optimizer == "sgd" else Adam(LR, (0.0, 0.999))
    loop = InnerLoop(steps=STEPS, rule=rule, first_order=True, grad_clip=clip)
    fast = adapt(loop, network, x, y, regression_losses)
    norms = []
    for t in range(TASKS):
        expected, task_norms = adapt_alone(network, x[t], y[t], optimizer, clip)
        norms += task_norms
        for name, value in expected.items():
            assert torch.allclose(fast[name][t], value, rtol=0, atol=1e-12), (t, name)
    # the comparison covers clipped and unclipped steps
    assert min(norms) < clip < max(norms), norms


def test_no_clip_where_every_gradient_is_shorter_than_the_limit():
    network = regression_network()
    x, y = regression_tasks()
    free = adapt(InnerLoop(steps=STEPS, rule=SGD(LR)), network, x, y, regression_losses, create_graph=False)
    loose = adapt(InnerLoop(steps=STEPS, rule=SGD(LR), grad_clip=1e6), network, x, y, regression_losses,
                  create_graph=False)
    for name in free:  # a factor of exactly 1
        assert torch.equal(free[name], loose[name])


def clipped_meta_loss(module, params, support, query, clip):
    loop = InnerLoop(steps=2, rule=SGD(0.5), grad_clip=clip)
    names = list(params)
    fast = loop.adapt(lambda p, x: task_forward(module, p, x, names), params, names, *support,
                      task_loss(classification_losses))
    return classification_losses(task_forward(module, fast, query[0], names), query[1]).mean()


def test_second_order_meta_gradient_through_the_clipping_equals_finite_differences():
    module = smooth_network()
    params = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
    support, query = tasks(2, 3, 2, seed=1), tasks(2, 3, 3, seed=2)
    loss = classification_losses(task_forward(module, params, support[0]), support[1]).sum()
    first_gradients = torch.autograd.grad(loss, list(params.values()))
    clip = 0.25 * float(torch.sqrt(sum(g.square().sum() for g in first_gradients)))  # a fraction: the clip acts
    unclipped = torch.autograd.grad(clipped_meta_loss(module, params, support, query, 0.0), list(params.values()))
    clipped = torch.autograd.grad(clipped_meta_loss(module, params, support, query, clip), list(params.values()))
    assert max(float((a - b).abs().max()) for a, b in zip(clipped, unclipped)) > 1e-3
    assert_gradient_equals_finite_differences(lambda moved: clipped_meta_loss(module, moved, support, query, clip),
                                              params)


def test_a_negative_clip_is_refused():
    with pytest.raises(ValueError, match="clip must be >= 0"):
        InnerLoop(grad_clip=-1.0)


def test_a_task_with_a_zero_gradient_keeps_a_finite_second_order_meta_gradient():
    """The norm's derivative at zero is taken as 0 (vector_norm's), not 0/0: a task already fitted stays finite."""
    network = regression_network()
    x, y = regression_tasks()
    params = {n: p.detach().clone().requires_grad_() for n, p in network.named_parameters()}
    with torch.no_grad():
        y = y.clone()
        y[0] = network(x[0])  # task 0's support loss and gradient are exactly zero
    fast = adapt(InnerLoop(steps=2, rule=SGD(LR), grad_clip=1.0), network, x, y, regression_losses, params=params)
    loss = regression_losses(task_forward(network, fast, x, list(params)), y).sum()
    gradient = torch.autograd.grad(loss, list(params.values()))
    assert all(bool(torch.isfinite(g).all()) for g in gradient)
    assert max(float(g.abs().max()) for g in gradient) > 0
