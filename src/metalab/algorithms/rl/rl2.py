"""RL^2 (Duan et al. 2016, "RL^2: Fast Reinforcement Learning via Slow Reinforcement Learning", section 2,
https://arxiv.org/abs/1611.02779).

A trial is ``shots`` episodes of one task. A GRU policy reads (o_t, a_{t-1}, r_{t-1}, d_{t-1}) and keeps its
hidden state across the episodes of a trial (reset to zero only when a new trial starts), so that what it
learnt about the task in one episode steers the next: the "fast" RL happens in the hidden state. The "slow"
RL trains the GRU's weights to maximise the total discounted return of whole trials, with TRPO and GAE
(section 3 of the paper), a linear feature baseline fitted on the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metalab.algorithms.registry import register
from metalab.algorithms.rl.base import RLLearner, RLOptions, mean_kl
from metalab.algorithms.rl.components.policies import RecurrentPolicy
from metalab.algorithms.rl.components.policy_gradient import surrogate_loss, trpo_update
from metalab.algorithms.rl.components.rollouts import Rollouts, collect_trials
from metalab.envs.tasks import EnvFamily, EnvTaskBatch
from metalab.nn.execution import SpeedOptions


@dataclass
class RL2Options(RLOptions):
    #: GRU hidden units (the paper: 256)
    hidden_size: int = 256


def trial_ends(rollouts: Rollouts) -> Tensor:
    """1 at the last valid step of each trial, else 0 [T, N, L]: the return runs across the trial's episodes."""
    mask = rollouts.mask
    following = torch.cat([mask[..., 1:], torch.zeros_like(mask[..., :1])], -1)
    return mask * (1 - following)


@register("rl2")
class RL2(RLLearner):
    """RL^2: a recurrent policy trained by TRPO on trials of ``task.shots`` episodes (``task.queries`` trials of
    each task per batch)."""

    options: RL2Options

    def __init__(self, options: RL2Options, input_shape: tuple[int, ...], speed: SpeedOptions | None = None,
                 environment: EnvFamily | None = None) -> None:
        super().__init__(options, input_shape, speed, environment)
        if options.hidden_size < 1:
            raise ValueError(f"learner.hidden_size must be >= 1 (GRU units), got {options.hidden_size}")
        self.policy = RecurrentPolicy(self.observation_size, self.action_space, options.hidden_size)

    def trials(self, batch: EnvTaskBatch, round_: int = 0) -> tuple[Rollouts, Tensor]:
        """``batch.queries`` trials of ``batch.shots`` episodes of every task: rollouts and the GRU's inputs."""
        return collect_trials(batch, batch.queries, batch.shots, self.policy, round_)

    def meta_step(self, batch: EnvTaskBatch) -> dict[str, Tensor]:  # type: ignore[override]  # environment tasks
        rollouts, inputs = self.trials(batch)
        advantages = self.advantages(rollouts, dones=trial_ends(rollouts), per_task=False)
        sequences = inputs.flatten(0, 1)  # [T * trials, L, input]: each trial from a zero hidden state
        with torch.no_grad():
            old, _ = self.policy(sequences)

        def objective(graph: bool) -> tuple[Tensor, Tensor]:
            with torch.set_grad_enabled(graph):
                policy, _ = self.policy(sequences)
                log_probs = policy.log_prob(rollouts.actions.flatten(0, 1)).view_as(rollouts.rewards)
                loss = surrogate_loss(log_probs, rollouts.log_probs, advantages, rollouts.mask).mean()
                return loss, mean_kl(old, policy, rollouts.mask.flatten(0, 1))

        update = trpo_update(list(self.policy.parameters()), objective, self.trpo())
        return {**update, "return": rollouts.returns().mean()}

    def scores(self, batch: EnvTaskBatch) -> dict[str, Tensor]:
        """Per task: the mean return of a trial (``return``), and of its first and last episodes."""
        rollouts, _ = self.trials(batch)
        episode = torch.cumsum(rollouts.dones, -1) - rollouts.dones  # which episode of the trial a step is in
        rewards = rollouts.rewards * rollouts.mask
        first = (rewards * (episode == 0)).sum(-1).mean(1)
        last = (rewards * (episode == batch.shots - 1)).sum(-1).mean(1)
        return {"return": rollouts.returns().mean(1), "first_episode": first, "last_episode": last}
