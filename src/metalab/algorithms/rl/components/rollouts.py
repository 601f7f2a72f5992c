"""Rollouts of a batch of environment tasks into tensors [T tasks, N episodes or trials, H steps].

Every environment copy of a task runs in one :class:`gymnasium.vector.SyncVectorEnv` (the batch's
:meth:`~metalab.envs.tasks.EnvTaskBatch.environments`); the policy acts on all of them at once. Actions come
from a generator seeded by the batch, so rollouts are a function of the parameters and the batch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from metalab.algorithms.rl.components.policies import RecurrentPolicy, sample
from metalab.envs.tasks import EnvTaskBatch


@dataclass
class Rollouts:
    """Episodes of T tasks, N per task, at most H steps each (steps after an episode's end are masked out).

    observations [T, N, H, D]; actions [T, N, H, A] (Box) or [T, N, H] (Discrete); rewards, mask, dones and
    log_probs [T, N, H]. ``dones`` is 1 at the last step of an episode, ``log_probs`` the sampling policy's.
    A trial of RL^2 is one row: its episodes follow each other along H, ``dones`` marking their ends.
    :func:`collect` also records what off-policy learners store as transitions: ``next_observations``
    [T, N, H, D] (the episode's last observation where it ends, not the next episode's first) and
    ``terminals`` [T, N, H] (1 where the environment terminated, not where the time limit cut the episode).
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    dones: Tensor
    log_probs: Tensor
    next_observations: Tensor | None = None
    terminals: Tensor | None = None

    def returns(self) -> Tensor:
        """Undiscounted return of each row: [T, N]."""
        return (self.rewards * self.mask).sum(-1)

    def steps(self) -> int:
        """Environment steps taken."""
        return int(self.mask.sum())


def generator_for(batch: EnvTaskBatch, round_: int) -> torch.Generator:
    """The generator of round ``round_``'s actions on ``batch`` (seeded by its tasks' seeds)."""
    seed = int(np.random.SeedSequence([*batch.seeds, round_]).generate_state(1)[0])
    return torch.Generator(device=batch.device).manual_seed(seed)


def to_environment(actions: Tensor, space: gym.Space) -> np.ndarray:
    """Actions as the vector environment takes them; Box actions clipped to the space's bounds."""
    values = actions.detach().cpu().numpy()
    if isinstance(space, gym.spaces.Box):
        return np.clip(values, space.low, space.high)
    return values.astype(np.int64)


def collect(batch: EnvTaskBatch, copies: int, policy: Callable[[Tensor], Distribution], round_: int) -> Rollouts:
    """``copies`` episodes of every task of ``batch`` with ``policy`` (observations [T, copies, D] -> a
    distribution of batch shape [T, copies]); ``round_`` numbers independent rollouts of one batch."""
    envs, obs = batch.environments(copies, round_)
    tasks, horizon, device = len(batch), batch.family.horizon, batch.device
    space = envs.single_action_space
    generator = generator_for(batch, round_)
    records: dict[str, list[Tensor]] = {k: [] for k in ("observations", "actions", "rewards", "mask", "dones",
                                                         "log_probs", "next_observations", "terminals")}
    alive = torch.ones(tasks, copies, device=device)
    for t in range(horizon):
        o = torch.as_tensor(obs, dtype=torch.float32, device=device).view(tasks, copies, -1)
        with torch.no_grad():
            distribution = policy(o)
            action = sample(distribution, generator)
            log_prob = distribution.log_prob(action)
        obs, reward, terminated, truncated, info = envs.step(to_environment(action.flatten(0, 1), space))
        ended = torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device).view(tasks, copies)
        if t == horizon - 1:
            ended = torch.ones_like(ended)
        following = np.array(obs, dtype=np.float32, copy=True)
        for i in np.flatnonzero(info.get("_final_obs", ())):  # episodes that ended: the reset replaced their obs
            following[i] = info["final_obs"][i]
        next_o = torch.as_tensor(following, device=device).view(tasks, copies, -1)
        terminal = torch.as_tensor(terminated, dtype=torch.float32, device=device).view(tasks, copies)
        for key, value in (("observations", o), ("actions", action), ("log_probs", log_prob), ("mask", alive),
                           ("rewards", torch.as_tensor(reward, dtype=torch.float32, device=device)
                            .view(tasks, copies) * alive), ("dones", ended * alive), ("next_observations", next_o),
                           ("terminals", terminal * alive)):
            records[key].append(value)
        alive = alive * (1 - ended)
        if not bool(alive.any()):
            break
    return Rollouts(**{k: torch.stack(v, 2) for k, v in records.items()})


def collect_trials(batch: EnvTaskBatch, trials: int, episodes: int, policy: RecurrentPolicy,
                   round_: int) -> tuple[Rollouts, Tensor]:
    """``trials`` trials of ``episodes`` episodes of every task with RL^2's recurrent ``policy``: its hidden
    state starts at zero with each trial and runs on through the trial's episodes.

    Returns the rollouts (one row per trial, H = episodes * horizon steps; episodes that end early leave
    masked steps only at the trial's end) and the policy's inputs [T, trials, H, input_size].
    """
    envs, obs = batch.environments(trials, round_)
    tasks, device, rows = len(batch), batch.device, len(batch) * trials
    space = envs.single_action_space
    generator = generator_for(batch, round_)
    # no action before a trial's first step: zeros (Box), -1 (Discrete, a zero one-hot)
    previous_action = (torch.full((rows,), -1.0, device=device) if policy.discrete
                       else torch.zeros(rows, policy.actions, device=device))
    previous_reward, previous_done = torch.zeros(rows, device=device), torch.zeros(rows, device=device)
    episodes_done = torch.zeros(rows, device=device)
    hidden: Tensor | None = None  # zeros: each trial starts afresh
    records: dict[str, list[Tensor]] = {k: [] for k in ("inputs", "actions", "rewards", "mask", "dones",
                                                         "log_probs", "observations")}
    for _ in range(episodes * batch.family.horizon):
        alive = (episodes_done < episodes).float()
        o = torch.as_tensor(obs, dtype=torch.float32, device=device).view(rows, -1)
        inputs = policy.inputs(o, previous_action, previous_reward, previous_done)
        with torch.no_grad():
            distribution, hidden = policy(inputs.unsqueeze(1), hidden)
            action = sample(distribution, generator)[:, 0]
            log_prob = distribution.log_prob(action.unsqueeze(1))[:, 0]
        obs, reward, terminated, truncated, _ = envs.step(to_environment(action, space))
        ended = torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device)
        r = torch.as_tensor(reward, dtype=torch.float32, device=device)
        for key, value in (("inputs", inputs), ("actions", action), ("log_probs", log_prob), ("mask", alive),
                           ("rewards", r * alive), ("dones", ended * alive), ("observations", o)):
            records[key].append(value)
        previous_action, previous_reward, previous_done = action.to(previous_action.dtype), r, ended
        episodes_done = episodes_done + ended
        if not bool((episodes_done < episodes).any()):
            break
    stacked = {k: torch.stack(v, 1).unflatten(0, (tasks, trials)) for k, v in records.items()}
    inputs = stacked.pop("inputs")
    return Rollouts(**stacked), inputs
