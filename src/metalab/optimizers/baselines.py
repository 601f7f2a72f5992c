"""The hand-designed optimizers that a learned one is compared with, each at its best learning rate.

SGD, Adam, RMSprop and Nesterov momentum (momentum 0.9) from ``torch.optim``, run on a batch of problems at
once: they act coordinate by coordinate, and the gradient of the batch's summed loss w.r.t. problem b's
parameters is problem b's own, so this is each problem optimised alone. The learning rate is tuned on the
training problems over a log grid (the paper: "the learning rate of each baseline tuned").
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from metalab.optimizers.problems import Problems

BASELINES: dict[str, Callable[[list[Tensor], float], torch.optim.Optimizer]] = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "nesterov": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
}
#: the learning rates tried for each baseline: 10^-4 .. 10^0.5 by half decades
LR_GRID = tuple(10 ** (k / 2) for k in range(-8, 2))


def run_baseline(name: str, lr: float, problems: Problems, steps: int) -> Tensor:
    """Losses [steps + 1, B] of ``steps`` steps of baseline ``name`` at rate ``lr`` (f(theta_0) first)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    theta = problems.initial().requires_grad_()
    optimizer = BASELINES[name]([theta], lr)
    losses = []
    for t in range(steps + 1):
        optimizer.zero_grad()
        loss = problems.loss(theta, t)
        losses.append(loss.detach())
        if t == steps:
            break
        loss.sum().backward()
        optimizer.step()
    return torch.stack(losses)


def trajectory_score(losses: Tensor) -> float:
    """The meta-objective of a trajectory, mean over steps and problems of f(theta_t), t >= 1 (inf if it
    diverged): what the learned optimizer minimises, so the baselines are tuned for the same thing."""
    value = float(losses[1:].mean())
    return value if math.isfinite(value) else math.inf


def tune_learning_rate(name: str, problems: Problems, steps: int, grid: Sequence[float] = LR_GRID) -> float:
    """The rate of ``grid`` with the lowest :func:`trajectory_score` of baseline ``name`` on ``problems``."""
    scores = {lr: trajectory_score(run_baseline(name, lr, problems, steps)) for lr in grid}
    return min(scores, key=lambda lr: scores[lr])
