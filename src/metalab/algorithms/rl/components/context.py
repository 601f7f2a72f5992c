"""PEARL's probabilistic context: a permutation-invariant encoder of transitions into a Gaussian posterior over
the task latent z (Rakelly et al. 2019, section 4.1, eq. 2 and figure 2).

Each transition c_n = (s, a, r[, s']) gives a Gaussian factor Psi(z | c_n) = N(mu_n, sigma_n^2) (an MLP, the
variance through a softplus); the posterior is their product, q(z | c_1:N) proportional to prod_n Psi(z | c_n),
a Gaussian in closed form (precisions add, means are precision-weighted), so it does not depend on the order of
the transitions. The KL term pulls q toward the unit Gaussian prior r(z) = N(0, I).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: the smallest variance of a factor (the authors' clamp): keeps the precisions finite
MIN_VARIANCE = 1e-7


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of ``sizes`` (input, hidden..., output) with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def product_of_gaussians(means: Tensor, variances: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The product of N Gaussian factors, renormalised: means, variances [..., N, L] (mask [..., N]: 0 drops a
    factor) -> mean, variance [..., L].

    1 / sigma^2 = sum_n 1 / sigma_n^2,  mu = sigma^2 * sum_n mu_n / sigma_n^2. With no factor left (all masked)
    it is the unit Gaussian prior.
    """
    precisions = 1.0 / variances.clamp_min(MIN_VARIANCE)
    if mask is not None:
        precisions = precisions * mask.unsqueeze(-1)
    total = precisions.sum(-2)
    empty = total == 0
    variance = torch.where(empty, torch.ones_like(total), 1.0 / total.where(~empty, torch.ones_like(total)))
    mean = torch.where(empty, torch.zeros_like(total), variance * (precisions * means).sum(-2))
    return mean, variance


def kl_to_unit_gaussian(mean: Tensor, variance: Tensor) -> Tensor:
    """KL(N(mean, diag variance) || N(0, I)) = 1/2 sum_l (sigma_l^2 + mu_l^2 - 1 - log sigma_l^2): [...] from
    [..., L]."""
    return 0.5 * (variance + mean**2 - 1.0 - variance.log()).sum(-1)


class ContextEncoder(nn.Module):
    """Psi: a transition [..., input_size] -> a Gaussian factor over z (mean and variance [..., latent_size])."""

    def __init__(self, input_size: int, latent_size: int, hidden: Sequence[int] = (200, 200, 200)) -> None:
        super().__init__()
        self.latent_size = latent_size
        self.net = mlp([input_size, *hidden, 2 * latent_size])

    def factors(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """context [..., N, input_size] -> each transition's factor: means, variances [..., N, L]."""
        out = self.net(context)
        return out[..., : self.latent_size], nn.functional.softplus(out[..., self.latent_size:])

    def posterior(self, context: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q(z | c_1:N): mean, variance [..., L] from context [..., N, input_size] (mask [..., N])."""
        return product_of_gaussians(*self.factors(context), mask)


def sample_latent(mean: Tensor, variance: Tensor, noise: Tensor) -> Tensor:
    """z = mu + sigma * eps, the reparameterised sample [..., L], for standard normal ``noise`` [..., L]."""
    return mean + variance.sqrt() * noise
