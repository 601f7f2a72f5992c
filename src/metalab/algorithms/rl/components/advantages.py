"""Returns, generalised advantage estimation and rllab's linear feature baseline.

Rewards are laid out [..., H] (time last); ``dones[..., t] = 1`` where an episode ends after step t, so that
nothing flows back across it (several episodes, or a trial of them, may share one row).
"""
from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rewards: Tensor, dones: Tensor, gamma: float) -> Tensor:
    """R_t = r_t + gamma * (1 - d_t) * R_{t+1}, R_H = 0: [..., H]."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + gamma * (1 - dones[..., t]) * running
        returns[..., t] = running
    return returns


def generalized_advantages(rewards: Tensor, values: Tensor, dones: Tensor, gamma: float, lam: float) -> Tensor:
    """GAE(gamma, lambda) (Schulman et al. 2016, eq. 16): [..., H].

    delta_t = r_t + gamma * (1 - d_t) * V(s_{t+1}) - V(s_t);  A_t = delta_t + gamma * lambda * (1 - d_t) * A_{t+1},
    with V after the last step of a row taken as 0 (the path ends there, as in rllab).
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    next_value = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        alive = 1 - dones[..., t]
        delta = rewards[..., t] + gamma * alive * next_value - values[..., t]
        running = delta + gamma * lam * alive * running
        advantages[..., t] = running
        next_value = values[..., t]
    return advantages


def normalized(advantages: Tensor, mask: Tensor) -> Tensor:
    """Advantages centred and scaled per task over its valid steps ([T, ...] with mask [T, ...]), as rllab's
    ``center_adv``."""
    dims = tuple(range(1, advantages.dim()))
    count = mask.sum(dims, keepdim=True).clamp_min(1)
    mean = (advantages * mask).sum(dims, keepdim=True) / count
    var = ((advantages - mean) ** 2 * mask).sum(dims, keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + 1e-8) * mask


def baseline_features(observations: Tensor) -> Tensor:
    """rllab's LinearFeatureBaseline features of [..., H, D] observations: [o, o^2, t, t^2, t^3, 1] with o
    clipped to [-10, 10] and t = step / 100: [..., H, 2D + 4]."""
    o = observations.clamp(-10, 10)
    steps = o.shape[-2]
    t = (torch.arange(steps, dtype=o.dtype, device=o.device) / 100.0).view(steps, 1).expand(*o.shape[:-1], 1)
    return torch.cat([o, o**2, t, t**2, t**3, torch.ones_like(t)], -1)


def linear_baseline(observations: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """Each task's linear feature baseline, fitted by ridge regression on its own valid steps, evaluated there.

    observations [T, N, H, D], returns and mask [T, N, H] -> values [T, N, H]. As rllab, the ridge coefficient
    grows tenfold (up to 5 times) while the solution is not finite.
    """
    features = baseline_features(observations).double() * mask.unsqueeze(-1).double()
    x = features.flatten(1, 2)  # [T, M, F]
    y = (returns * mask).double().flatten(1, 2)
    gram = x.transpose(1, 2) @ x
    rhs = x.transpose(1, 2) @ y.unsqueeze(-1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    for _ in range(5):
        weights = torch.linalg.lstsq(gram + reg * eye, rhs).solution
        if bool(torch.isfinite(weights).all()):
            break
        reg *= 10
    values = (x @ weights).squeeze(-1).view_as(returns)
    return values.to(returns.dtype) * mask
