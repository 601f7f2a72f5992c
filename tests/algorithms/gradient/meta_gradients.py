"""One meta-step's meta-gradient of a gradient learner in float64, from the seed every learner starts from
(shared by the tests of Meta-Curvature, T-net and MT-net, importable as ``meta_gradients``)."""
from __future__ import annotations

import torch

from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions

WAYS, SIZE = 3, 16


def image_tasks(count: int = 2, shots: int = 2, queries: int = 2, seed: int = 0) -> Task:
    """``count`` tasks of random 16x16 images, ``WAYS`` classes, float64."""
    generator = torch.Generator().manual_seed(seed)
    labels = lambda n: torch.arange(WAYS).repeat_interleave(n).expand(count, -1)  # noqa: E731
    return Task(torch.rand(count, WAYS * shots, 1, SIZE, SIZE, generator=generator, dtype=torch.float64), labels(shots),
                torch.rand(count, WAYS * queries, 1, SIZE, SIZE, generator=generator, dtype=torch.float64),
                labels(queries))


def sine_tasks(count: int = 3, shots: int = 4, seed: int = 0) -> Task:
    """``count`` sinusoid regression tasks (vectors [T, N, 1]), float64."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 2 * shots, 1, generator=generator, dtype=torch.float64) * 10 - 5
    y = torch.sin(x + torch.arange(count, dtype=torch.float64).view(-1, 1, 1))
    return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


def build(cls, backbone: str = "conv4", speed: dict | None = None, **options):
    """``cls`` on 16x16 images (Conv-4, 4 channels) or 1-D inputs (MLP 8-8), float64, weights from seed 0."""
    torch.manual_seed(0)
    if backbone == "mlp":
        kind, shape = {"kind": "regression", "backbone": "mlp", "ways": 1, "mlp_hidden": [8, 8]}, (1,)
    else:
        kind, shape = {"ways": WAYS, "hidden": 4}, (1, SIZE, SIZE)
    return cls(cls.Options(name="x", **kind, **options), shape, SpeedOptions(**(speed or {"engine": "reference"}))
               ).double()


def meta_gradient(learner, batch: Task) -> dict[str, torch.Tensor]:
    """The network's meta-gradient by parameter name after one meta-step on ``batch``."""
    torch.manual_seed(1)  # MT-net's mask samples
    learner.meta_step(batch)
    return {name: p.grad.clone() for name, p in learner.network.named_parameters() if p.grad is not None}


def assert_same_gradients(ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                          atol: float = 1e-12) -> None:
    assert ours.keys() == expected.keys()
    assert max(float(g.abs().max()) for g in expected.values()) > 1e-3  # a meta-gradient worth comparing
    for name, grad in expected.items():
        error = float((ours[name] - grad).abs().max())
        assert error <= atol, f"{name}: differs by {error:.3g}"
