"""The shared functional inner loop: task_forward against the unmodified module, and MAML's
meta-gradient against central finite differences (float64, small smooth network with BatchNorm)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from metalab.nn.backbones import MLP, Conv4
from metalab.nn.functional import (
    InnerLoop,
    classification_losses,
    expand_for_tasks,
    inner_loop,
    task_forward,
    update_running_statistics,
    ForwardSettings,
)


def smooth_network(ways: int = 3) -> nn.Sequential:
    """tanh + average pooling: the meta-loss is smooth, so finite differences converge."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16, ways),
    )


def tasks(count: int, ways: int, per_class: int, size: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, ways * per_class, 1, size, size, generator=generator)
    y = torch.arange(ways).repeat_interleave(per_class).expand(count, -1)
    return x, y


def per_task_reference(module: nn.Module, params: list[dict[str, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.func.functional_call(module, params[t], (x[t],)) for t in range(x.shape[0])])


@pytest.mark.parametrize("network", ["conv4", "smooth", "mlp"])
def test_task_forward_equals_the_module_run_task_by_task(network):
    torch.manual_seed(1)
    if network == "conv4":
        module, x = nn.Sequential(Conv4(1, 8), nn.Linear(8, 5)), torch.randn(3, 4, 1, 16, 16)
    elif network == "smooth":
        module, x = smooth_network(), torch.randn(3, 4, 1, 8, 8)
    else:
        module, x = nn.Sequential(MLP(1, [6, 6]), nn.BatchNorm1d(6), nn.Linear(6, 1)), torch.randn(3, 5, 1)
    names = [n for n, _ in module.named_parameters()]
    per_task = {n: p.detach() + 0.1 * torch.randn(3, *p.shape) for n, p in module.named_parameters()}
    module.train()
    ours = task_forward(module, per_task, x, names)
    reference = per_task_reference(module, [{n: v[t] for n, v in per_task.items()} for t in range(3)], x)
    assert torch.allclose(ours, reference, atol=1e-12)
    module.eval()  # running statistics
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.running_mean.uniform_(-1, 1), layer.running_var.uniform_(0.5, 2)
    ours = task_forward(module, per_task, x, names, ForwardSettings(statistics="running"))
    reference = per_task_reference(module, [{n: v[t] for n, v in per_task.items()} for t in range(3)], x)
    assert torch.allclose(ours, reference, atol=1e-12)


def test_unknown_layers_run_through_functional_call():
    class Scale(nn.Module):  # a layer task_forward has no folded rule for
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            return x * self.scale

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), Scale(), nn.Linear(4, 2))
    per_task = {n: p.detach() + torch.randn(2, *p.shape) for n, p in module.named_parameters()}
    x = torch.randn(2, 5, 3)
    ours = task_forward(module, per_task, x, list(per_task))
    reference = per_task_reference(module, [{n: v[t] for n, v in per_task.items()} for t in range(2)], x)
    assert torch.allclose(ours, reference, atol=1e-12)


def test_query_statistics_never_reach_support_predictions():
    """Transductive: a support prediction depends only on the support set; running: on nothing else."""
    module = smooth_network()
    params = dict(module.named_parameters())
    x, _ = tasks(1, 3, 2)
    for settings in (ForwardSettings("batch"), ForwardSettings("running")):
        alone = task_forward(module, params, x[:, :3], (), settings)
        with_others = task_forward(module, params, x, (), settings)
        changed = task_forward(module, params, torch.cat([x[:, :3], 5 + x[:, 3:]], 1), (), settings)
        if settings.statistics == "running":  # each prediction depends on its own input only
            assert torch.allclose(alone, with_others[:, :3]) and torch.allclose(alone, changed[:, :3])
        else:  # the statistics are of the set given, so a separate call keeps the support clean
            assert not torch.allclose(with_others[:, :3], changed[:, :3])


def meta_loss(module, params, support, query, steps):
    loop = InnerLoop(steps=steps, lr=0.5)
    names = list(params)
    fast = inner_loop(module, params, names, *support, classification_losses, loop)
    return classification_losses(task_forward(module, fast, query[0], names), query[1]).mean()


def assert_gradient_equals_finite_differences(loss_of, params: dict[str, torch.Tensor]) -> None:
    """``loss_of(params)``'s autograd gradient against central differences along two random directions."""
    gradient = torch.autograd.grad(loss_of(params), list(params.values()))
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        direction = [torch.randn(p.shape, generator=generator) for p in params.values()]

        def loss_at(step: float) -> float:
            moved = {n: (p.detach() + step * d).requires_grad_() for (n, p), d in zip(params.items(), direction)}
            return float(loss_of(moved).detach())

        def central(h: float) -> float:
            return (loss_at(h) - loss_at(-h)) / (2 * h)

        # Richardson extrapolation of the central difference: truncation error O(h^4), not O(h^2).
        finite = (4 * central(5e-6) - central(1e-5)) / 3
        analytic = float(sum((g * d).sum() for g, d in zip(gradient, direction)))
        assert abs(analytic) > 1e-4
        assert abs(finite - analytic) < 1e-8, (finite, analytic)


@pytest.mark.parametrize("steps", [1, 5])
def test_meta_gradient_equals_central_finite_differences(steps):
    module = smooth_network()
    params = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
    support, query = tasks(2, 3, 2, seed=1), tasks(2, 3, 3, seed=2)
    assert_gradient_equals_finite_differences(lambda moved: meta_loss(module, moved, support, query, steps), params)


def test_first_order_leaves_no_second_order_terms_and_running_statistics_update():
    module = smooth_network()
    params = dict(module.named_parameters())
    x, y = tasks(2, 3, 2)
    fast = inner_loop(module, params, list(params), x, y, classification_losses, InnerLoop(steps=2, lr=0.1, first_order=True))
    assert all(not fast[n].grad_fn or "Expand" in type(fast[n].grad_fn).__name__ or fast[n].requires_grad for n in fast)
    record = {}
    task_forward(module, fast, x, list(params), ForwardSettings(record=record))
    before = module[1].running_mean.clone()
    update_running_statistics(module, record)
    assert set(record) == {"1.", "5."}
    expected = 0.9 * before + 0.1 * record["1."][0]
    assert torch.allclose(module[1].running_mean, expected)


def test_expand_for_tasks_shares_storage():
    p = torch.randn(3, 2)
    expanded = expand_for_tasks({"w": p, "b": p}, ["w"], 4)
    assert expanded["w"].shape == (4, 3, 2) and expanded["w"].data_ptr() == p.data_ptr()
    assert expanded["b"] is p
