"""WarpGrad against an independent computation on a small smooth network (tanh MLP, float64): the inner loop leaves
the warp layers alone; the warp meta-gradient equals central finite differences of the paper's trajectory
objective J(omega) (one warped step from each fixed trajectory point, scored on the queries); the initialisation's
gradient is Leap's normalised segments (or Reptile's theta - phi)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metalab.algorithms.gradient.warpgrad import WarpGrad
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import support_minibatches

TASKS, SHOTS, QUERIES, STEPS, LR = 2, 4, 3, 3, 0.3


def smooth_learner(**options) -> WarpGrad:
    """WarpGrad on 1 -> tanh 3 -> warp 3 -> tanh 3 -> warp 3 -> head 1 (the warped MLP with tanh), float64."""
    torch.manual_seed(0)
    learner = WarpGrad(WarpGrad.Options(kind="regression", backbone="mlp", mlp_hidden=[3, 3], ways=1,
                                        inner_steps=STEPS, inner_lr=LR, **options), (1,),
                       SpeedOptions(engine="reference"))
    body = learner.network.get_submodule("body")
    for i in range(2):
        body.get_submodule(f"task{i}")[1] = nn.Tanh()
    return learner.double()


def sine_tasks(seed: int = 0) -> Task:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(TASKS, SHOTS + QUERIES, 1, generator=generator, dtype=torch.float64) * 4 - 2
    y = torch.sin(x + torch.arange(TASKS, dtype=torch.float64).view(-1, 1, 1))
    return Task(x[:, :SHOTS], y[:, :SHOTS], x[:, SHOTS:], y[:, SHOTS:])


def mse(network: nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (functional_call(network, params, (x,)) - y).pow(2).mean()


def support(tasks: Task, task: int, step: int, batches: list[torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
    """The support examples one task uses at one inner step: all of them, or that step's minibatch."""
    rows = slice(None) if batches is None else batches[step][task]
    return tasks.support_x[task][rows], tasks.support_y[task][rows]


def trajectory(learner: WarpGrad, task: int, tasks: Task, batches: list[torch.Tensor] | None = None) -> list[dict]:
    """theta_0..theta_K of one task: plain SGD on its support MSE w.r.t. the task layers, one task at a time
    (``batches``: per step, each task's support positions [T, B])."""
    params = {name: p.detach() for name, p in learner.network.named_parameters()}
    points = [params]
    names = learner.adapted_names()
    for step in range(STEPS):
        current = {n: (v.clone().requires_grad_() if n in names else v) for n, v in points[-1].items()}
        grads = torch.autograd.grad(mse(learner.network, current, *support(tasks, task, step, batches)),
                                    [current[n] for n in names])
        points.append({**points[-1], **{n: current[n].detach() - LR * g for n, g in zip(names, grads)}})
    return points


def objective(learner: WarpGrad, warp: dict, points: list[list[dict]], tasks: Task,
              batches: list[torch.Tensor] | None = None) -> torch.Tensor:
    """J(omega) = (1/T) sum_t (1/K) sum_k L_query_t(theta_k - alpha grad L_support_t(theta_k; omega); omega), the
    support loss at theta_k on step k's minibatch when ``batches`` are given."""
    total = torch.zeros((), dtype=torch.float64)
    names = learner.adapted_names()
    for task, path in enumerate(points):
        for step, point in enumerate(path[:-1]):
            current = {**point, **warp, **{n: point[n].clone().requires_grad_() for n in names}}
            grads = torch.autograd.grad(mse(learner.network, current, *support(tasks, task, step, batches)),
                                        [current[n] for n in names], create_graph=True)
            stepped = {**current, **{n: current[n] - LR * g for n, g in zip(names, grads)}}
            total = total + mse(learner.network, stepped, tasks.query_x[task], tasks.query_y[task])
    return total / (len(points) * STEPS)


def test_the_inner_loop_adapts_task_layers_and_never_the_warp_layers():
    learner, tasks = smooth_learner(), sine_tasks()
    seen = []
    phi = learner.adapt_first_order(tasks.support_x, tasks.support_y, training=True,
                                    visit=lambda k, fast: seen.append({n: v.detach().clone() for n, v in fast.items()}))
    assert len(seen) == STEPS + 1
    network = dict(learner.network.named_parameters())
    for name in learner.warp_names():
        assert all(torch.equal(point[name], network[name]) for point in seen) and torch.equal(phi[name], network[name])
    for name in learner.adapted_names():
        assert phi[name].shape == (TASKS, *network[name].shape)
    assert max(float((phi[n] - network[n].detach()).abs().max()) for n in learner.adapted_names()) > 1e-3
    expected = trajectory(learner, 1, tasks)[-1]
    assert all(torch.allclose(phi[n][1], expected[n], atol=1e-12) for n in learner.adapted_names())


@pytest.mark.parametrize("inner_batch", [0, 2])
def test_the_warp_meta_gradient_equals_finite_differences_of_the_trajectory_objective(inner_batch):
    """Full-batch inner steps, and minibatches of 2 of the 4 support examples (the multi-alphabet protocol's
    batches): the learner draws them at the start of its meta-step, so the same seed gives the test the same."""
    learner, tasks = smooth_learner(inner_batch=inner_batch), sine_tasks()
    torch.manual_seed(3)
    batches = support_minibatches(TASKS, SHOTS, inner_batch, STEPS) if inner_batch else None
    points = [trajectory(learner, task, tasks, batches) for task in range(TASKS)]
    before = {name: p.detach().clone() for name, p in learner.network.named_parameters()}
    torch.manual_seed(3)
    learner.meta_step(tasks)
    warp = {name: p.detach().clone() for name, p in learner.network.named_parameters()
            if name in learner.warp_names()}
    eps, checked = 1e-6, 0
    for name, value in warp.items():
        grad = dict(learner.network.named_parameters())[name].grad
        for index in range(value.numel()):
            shifted = [value.flatten().clone(), value.flatten().clone()]
            shifted[0][index] += eps
            shifted[1][index] -= eps
            plus, minus = (objective(learner, {**warp, name: s.view_as(value)}, points, tasks, batches)
                           for s in shifted)
            difference = float((plus - minus).detach() / (2 * eps))
            assert abs(float(grad.flatten()[index]) - difference) <= 1e-7 + 1e-6 * abs(difference), (name, index)
            checked += abs(difference) > 1e-4
    assert checked > 10
    for name, p in learner.network.named_parameters():
        assert torch.equal(p.detach(), before[name])  # the meta-step only fills .grad


@pytest.mark.parametrize("init_objective", ["leap", "reptile"])
def test_the_initialisation_gradient_is_leap_s_or_reptile_s(init_objective):
    learner, tasks = smooth_learner(init_objective=init_objective), sine_tasks()
    points = [trajectory(learner, task, tasks) for task in range(TASKS)]
    learner.meta_step(tasks)
    names = learner.adapted_names()
    expected = {n: torch.zeros_like(points[0][0][n]) for n in names}
    for path in points:
        if init_objective == "reptile":
            for n in names:
                expected[n] += (path[0][n] - path[-1][n]) / TASKS
            continue
        for start, end in zip(path, path[1:]):
            length = torch.sqrt(sum(((start[n] - end[n]) ** 2).sum() for n in names))
            for n in names:
                expected[n] += (start[n] - end[n]) / length / TASKS
    network = dict(learner.network.named_parameters())
    for n in names:
        assert torch.allclose(network[n].grad, expected[n], atol=1e-10), n


def test_sampled_warp_points_use_that_many_steps_and_conv4_predicts():
    learner, tasks = smooth_learner(warp_points=1), sine_tasks()
    learner.meta_step(tasks)
    assert all(dict(learner.network.named_parameters())[n].grad is not None for n in learner.warp_names())
    torch.manual_seed(0)
    conv = WarpGrad(WarpGrad.Options(ways=2, hidden=3, inner_steps=2), (1, 16, 16)).double()
    x = torch.rand(2, 4, 1, 16, 16, dtype=torch.float64)
    y = torch.tensor([[0, 1, 0, 1]] * 2)
    assert {n.split(".")[1][:4] for n in conv.warp_names()} == {"warp"}
    metrics = conv.meta_step(Task(x, y, x, y))
    assert torch.isfinite(metrics["loss"]) and conv.predict(Task(x, y, x, y)).shape == (2, 4, 2)


@pytest.mark.parametrize("option, value, message", [
    ("init_objective", "maml", "init_objective"), ("warp_points", -1, "warp_points"),
    ("first_order", True, "first_order"), ("backbone", "resnet12", "backbone"),
])
def test_bad_options_are_refused_naming_the_option(option, value, message):
    with pytest.raises(ValueError, match=message):
        WarpGrad(WarpGrad.Options(**{option: value}), (3, 28, 28))


def test_network_layout_interleaves_task_and_warp_layers():
    learner = smooth_learner()
    body = learner.network.get_submodule("body")
    assert list(body._modules) == ["task0", "warp0", "task1", "warp1"]
    assert isinstance(learner.network.get_submodule("head"), nn.Linear)
