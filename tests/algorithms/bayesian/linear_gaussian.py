"""Bayesian linear regression, the closed-form reference of the Bayesian learners' tests.

y = w x + b + noise, noise ~ N(0, sigma^2), with a Gaussian prior on (w, b): the posterior is Gaussian with
precision Lambda = Sigma_0^-1 + Phi^T Phi / sigma^2 and mean Lambda^-1 (Sigma_0^-1 mu_0 + Phi^T y / sigma^2),
Phi = [x, 1] (Bishop 2006, eq. 3.50-3.51). The learners run a network whose only layer is Linear(1, 1), so their
parameters are exactly (w, b).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from metalab.data.task import Task


def linear_tasks(tasks: int = 2, shots: int = 6, queries: int = 4, noise: float = 0.5, seed: int = 0) -> Task:
    """Regression tasks in float64: x uniform in [-2, 2], y = w x + b + noise with (w, b) ~ N(0, I) per task."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(tasks, shots + queries, 1, generator=generator, dtype=torch.float64) * 4 - 2
    w, b = torch.randn(2, tasks, 1, 1, generator=generator, dtype=torch.float64)
    y = w * x + b + noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


def features(x: torch.Tensor) -> torch.Tensor:
    """Phi [N, 2] = [x, 1] of inputs [N, 1]: the columns of the weight and the bias."""
    return torch.cat([x, torch.ones_like(x)], 1)


def posterior(x: torch.Tensor, y: torch.Tensor, prior_mean: torch.Tensor, prior_std: torch.Tensor,
              noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact posterior over (w, b): mean [2] and covariance [2, 2], given x, y [N, 1] and a diagonal prior."""
    phi = features(x)
    precision = torch.diag(prior_std.pow(-2)) + phi.T @ phi / noise**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ (prior_mean / prior_std.pow(2) + phi.T @ y[:, 0] / noise**2)
    return mean, covariance


def use_linear_network(learner: nn.Module) -> None:
    """Replace the learner's network by Linear(1, 1) (named ``head``, as the gradient family's head) in float64."""
    learner.network = nn.Sequential(OrderedDict(head=nn.Linear(1, 1))).double()


def as_vector(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """(w, b) rows [R, 2] from a linear network's parameters (``head.weight`` [R, 1, 1], ``head.bias`` [R, 1])."""
    return torch.cat([params["head.weight"].reshape(-1, 1), params["head.bias"].reshape(-1, 1)], 1)
