"""Policies of the meta-RL learners, with functional parameters (per-task ones for the gradient-based methods).

:class:`MLPPolicy` maps observations to a Gaussian (continuous actions, state-independent log std) or a
categorical distribution (discrete actions). Its ``distribution(obs, params)`` takes the parameters by name,
either shared ([out, in]) or one set per task ([T, out, in], observations [T, ...]). :class:`RecurrentPolicy`
is RL^2's GRU policy.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x [..., in] @ weight [out, in]^T + bias, or per task: x [T, ..., in] with weight [T, out, in], bias [T, out]."""
    if weight.dim() == 2:
        return nn.functional.linear(x, weight, bias)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.reshape(*x.shape[:-1], weight.shape[1])


def action_size(space: gym.Space) -> int:
    """Outputs a policy needs for ``space``: its dimension (Box) or its number of actions (Discrete)."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0])
    raise ValueError(f"meta-RL policies act in Box (vector) or Discrete action spaces, got {space}")


class MLPPolicy(nn.Module):
    """A Gaussian (Box actions) or categorical (Discrete actions) policy on an MLP of ``hidden`` layers."""

    def __init__(self, observation_size: int, action_space: gym.Space, hidden: Sequence[int] = (100, 100),
                 activation: str = "relu", init_std: float = 1.0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"learner.activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        sizes = [observation_size, *hidden, action_size(action_space)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = activation
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((sizes[-1],), math.log(init_std)))

    def distribution(self, observations: Tensor, params: Mapping[str, Tensor] | None = None) -> Distribution:
        """pi(. | o) for observations [..., D] (per-task params: [T, ..., D]); batch shape [...]."""
        params = dict(self.named_parameters()) if params is None else params
        x = observations
        for i in range(len(self.layers)):
            x = linear(x, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
            if i < len(self.layers) - 1:
                x = ACTIVATIONS[self.activation](x)
        if self.discrete:
            return Categorical(logits=x)
        log_std = params["log_std"]
        if log_std.dim() == 2:  # per task: [T, A] -> [T, 1, ..., A]
            log_std = log_std.view(log_std.shape[0], *([1] * (x.dim() - 2)), log_std.shape[1])
        return Independent(Normal(x, log_std.exp().expand_as(x)), 1)


def sample(distribution: Distribution, generator: torch.Generator) -> Tensor:
    """An action from a Gaussian or categorical policy, drawn with ``generator`` (rollouts are then a function
    of the parameters and the generator's seed, not of torch's global state). A distribution of its own kind
    (PEARL's squashed Gaussian) draws with its ``sample_with(generator)``."""
    if hasattr(distribution, "sample_with"):
        return distribution.sample_with(generator)
    base = distribution.base_dist if isinstance(distribution, Independent) else distribution
    if isinstance(base, Normal):
        noise = torch.randn(base.loc.shape, generator=generator, dtype=base.loc.dtype, device=base.loc.device)
        return base.loc + base.scale * noise
    if isinstance(base, Categorical):
        flat = base.probs.reshape(-1, base.probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).view(base.probs.shape[:-1])
    raise TypeError(f"cannot sample from {type(distribution).__name__}")


class RecurrentPolicy(nn.Module):
    """RL^2's policy (Duan et al. 2016, section 2.2): a GRU over (o_t, a_{t-1}, r_{t-1}, d_{t-1}) whose hidden state
    runs through every episode of a trial, and a categorical or Gaussian head on it."""

    def __init__(self, observation_size: int, action_space: gym.Space, hidden: int = 256,
                 init_std: float = 1.0) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.actions = action_size(action_space)
        self.input_size = observation_size + self.actions + 2
        self.gru = nn.GRU(self.input_size, hidden, batch_first=True)
        self.head = nn.Linear(hidden, self.actions)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((self.actions,), math.log(init_std)))

    def inputs(self, observations: Tensor, previous_actions: Tensor, rewards: Tensor, dones: Tensor) -> Tensor:
        """The GRU's input [..., D + A + 2]: o_t, a_{t-1} (one-hot if discrete; -1, at a trial's start, is no
        action: zeros), r_{t-1}, d_{t-1}."""
        if self.discrete:
            taken = previous_actions.long()
            actions = (nn.functional.one_hot(taken.clamp_min(0), self.actions) * (taken >= 0).unsqueeze(-1))
            actions = actions.to(observations.dtype)
        else:
            actions = previous_actions
        return torch.cat([observations, actions, rewards.unsqueeze(-1), dones.unsqueeze(-1)], -1)

    def forward(self, inputs: Tensor, hidden: Tensor | None = None) -> tuple[Distribution, Tensor]:
        """inputs [B, L, input_size] from ``hidden`` [1, B, H] (None: zeros, a new trial) -> the policy at each
        of the L steps (batch shape [B, L]) and the hidden state after them."""
        out, hidden = self.gru(inputs, hidden)
        x = self.head(out)
        if self.discrete:
            return Categorical(logits=x), hidden
        return Independent(Normal(x, self.log_std.exp().expand_as(x)), 1), hidden
