"""Soft actor-critic as PEARL uses it (Haarnoja et al. 2018, with a state-value network V and its target; the
authors' ``rlkit``): a tanh-Gaussian policy, two Q networks and V, each conditioned on the task latent z.

Targets (section 5.2, eq. 3 of the SAC paper; the authors' code):

* Q:  y = scale * r + (1 - terminal) * gamma * V_target(s', z)
* V:  y = min(Q1, Q2)(s, a~pi, z) - log pi(a | s, z)
* pi: minimise log pi(a | s, z) - min(Q1, Q2)(s, a, z), a = tanh(mu + sigma * eps) reparameterised.

Actions are normalised to [-1, 1]; :class:`SquashedGaussian` maps them to an environment's Box bounds.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Normal

from metalab.algorithms.rl.components.context import mlp

#: the policy's log standard deviation is clamped to this range (the authors' bounds)
LOG_STD_RANGE = (-20.0, 2.0)
#: added inside log(1 - tanh(u)^2) (the authors' epsilon)
TANH_EPSILON = 1e-6


def squash_log_prob(pre_tanh: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log pi(a) of a = tanh(u), u ~ N(mean, std): log N(u) - sum log(1 - tanh(u)^2 + eps), [...] from [..., A]."""
    gaussian = Normal(mean, std).log_prob(pre_tanh)
    return (gaussian - torch.log(1 - torch.tanh(pre_tanh) ** 2 + TANH_EPSILON)).sum(-1)


@dataclass
class PolicyOutput:
    """What the policy gives on a batch: actions in [-1, 1] and their log-probabilities, with the Gaussian's
    parameters (for the authors' regularisers). actions, mean, log_std [..., A]; log_prob [...]."""

    actions: Tensor
    log_prob: Tensor
    mean: Tensor
    log_std: Tensor


class TanhGaussianPolicy(nn.Module):
    """pi(a | s, z) = tanh(N(mu(s, z), sigma(s, z)^2)), an MLP with ReLU hidden layers."""

    def __init__(self, input_size: int, action_size: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp([input_size, *hidden, 2 * action_size])
        self.action_size = action_size

    def gaussian(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """inputs [..., input_size] -> mean, log std [..., A] of the pre-tanh Gaussian."""
        out = self.net(inputs)
        return out[..., : self.action_size], out[..., self.action_size:].clamp(*LOG_STD_RANGE)

    def forward(self, inputs: Tensor, noise: Tensor) -> PolicyOutput:
        """Reparameterised actions a = tanh(mu + sigma * eps) and log pi(a | s, z), eps = ``noise`` [..., A]."""
        mean, log_std = self.gaussian(inputs)
        std = log_std.exp()
        pre_tanh = mean + std * noise
        return PolicyOutput(torch.tanh(pre_tanh), squash_log_prob(pre_tanh, mean, std), mean, log_std)


class SquashedGaussian(Distribution):
    """The policy's action distribution in an environment's Box bounds (what rollouts sample from): tanh of a
    Gaussian, mapped affinely from [-1, 1] to [low, high]; ``deterministic``: the action is tanh(mean).

    Batch shape [...], event shape [A].
    """

    arg_constraints: dict = {}

    def __init__(self, mean: Tensor, log_std: Tensor, low: Tensor, high: Tensor, deterministic: bool = False) -> None:
        super().__init__(mean.shape[:-1], mean.shape[-1:], validate_args=False)
        self.mean_, self.std = mean, log_std.exp()
        self.centre, self.half = (high + low) / 2, (high - low) / 2
        self.deterministic = deterministic

    def sample_with(self, generator: torch.Generator) -> Tensor:
        if self.deterministic:
            return self.centre + self.half * torch.tanh(self.mean_)
        noise = torch.randn(self.mean_.shape, generator=generator, dtype=self.mean_.dtype, device=self.mean_.device)
        return self.centre + self.half * torch.tanh(self.mean_ + self.std * noise)

    def normalized(self, actions: Tensor) -> Tensor:
        """Environment actions -> [-1, 1]."""
        return ((actions - self.centre) / self.half).clamp(-1.0, 1.0)

    def log_prob(self, value: Tensor) -> Tensor:
        squashed = self.normalized(value).clamp(-1 + TANH_EPSILON, 1 - TANH_EPSILON)
        return squash_log_prob(torch.atanh(squashed), self.mean_, self.std) - self.half.log().sum()


class Critic(nn.Module):
    """Q(s, a, z) or V(s, z): an MLP on the concatenated inputs -> [...] values."""

    def __init__(self, input_size: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp([input_size, *hidden, 1])

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.net(torch.cat(inputs, -1)).squeeze(-1)


def q_target(rewards: Tensor, terminals: Tensor, next_values: Tensor, gamma: float, reward_scale: float) -> Tensor:
    """y_Q = scale * r + (1 - terminal) * gamma * V_target(s', z), elementwise."""
    return reward_scale * rewards + (1.0 - terminals) * gamma * next_values


def v_target(q1: Tensor, q2: Tensor, log_prob: Tensor) -> Tensor:
    """y_V = min(Q1, Q2)(s, a~pi) - log pi(a | s), elementwise (the entropy weight is 1: the reward scale sets it)."""
    return torch.minimum(q1, q2) - log_prob


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(1.0 - tau).add_(s, alpha=tau)


def action_bounds(low: object, high: object) -> tuple[Tensor, Tensor]:
    """A Box's bounds as float tensors; infinite bounds cannot be squashed into."""
    lo, hi = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("a tanh-Gaussian policy needs a Box action space with finite bounds")
    return lo, hi

