"""Small networks and tasks shared by the tests of metalab.nn (float64, see conftest.py)."""
from __future__ import annotations

import torch
from torch import nn


def smooth_network(ways: int = 3) -> nn.Sequential:
    """tanh + average pooling: the meta-loss is smooth, so finite differences converge."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16, ways),
    )


def tasks(count: int, ways: int, per_class: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images [count, ways * per_class, 1, size, size] and their labels [count, ways * per_class]."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, ways * per_class, 1, size, size, generator=generator)
    y = torch.arange(ways).repeat_interleave(per_class).expand(count, -1)
    return x, y


def assert_gradient_equals_finite_differences(loss_of, params: dict[str, torch.Tensor]) -> None:
    """``loss_of(params)``'s autograd gradient against central differences along two random directions."""
    gradient = torch.autograd.grad(loss_of(params), list(params.values()))
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        direction = [torch.randn(p.shape, generator=generator) for p in params.values()]

        def loss_at(step: float, direction: list[torch.Tensor] = direction) -> float:
            moved = {n: (p.detach() + step * d).requires_grad_() for (n, p), d in zip(params.items(), direction)}
            return float(loss_of(moved).detach())

        def central(h: float) -> float:
            return (loss_at(h) - loss_at(-h)) / (2 * h)

        # Richardson extrapolation of the central difference: truncation error O(h^4), not O(h^2).
        finite = (4 * central(5e-6) - central(1e-5)) / 3
        analytic = float(sum((g * d).sum() for g, d in zip(gradient, direction)))
        assert abs(analytic) > 1e-4
        assert abs(finite - analytic) < 1e-8, (finite, analytic)
