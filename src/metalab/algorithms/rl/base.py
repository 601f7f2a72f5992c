"""What the meta-RL learners share: options, advantages with a linear baseline, TRPO and the scores.

A meta-RL learner's batch is an :class:`~metalab.envs.tasks.EnvTaskBatch` (T tasks, ``shots`` episodes to adapt
from, ``queries`` episodes that score). ``meta_step`` collects its own rollouts and applies its own update
(TRPO's constrained natural-gradient step), so it leaves no gradient for the trainer's optimiser.
``scores(batch)`` gives each task's return after adaptation (``return``, the evaluation's headline) and at the
stages before it, which the evaluator summarises as mean +- 95% CI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metalab.algorithms.base import LearnerOptions, MetaLearner
from metalab.algorithms.rl.components.advantages import (
    discounted_returns,
    generalized_advantages,
    linear_baseline,
    normalized,
)
from metalab.algorithms.rl.components.policy_gradient import TRPO
from metalab.algorithms.rl.components.rollouts import Rollouts
from metalab.data.task import Task
from metalab.envs.tasks import EnvFamily
from metalab.nn.execution import SpeedOptions


@dataclass
class RLOptions(LearnerOptions):
    #: discount factor gamma of the returns
    gamma: float = 0.99
    #: lambda of generalised advantage estimation (1.0: Monte-Carlo returns minus the baseline)
    gae_lambda: float = 1.0
    #: TRPO's bound delta on the mean KL divergence of one outer update
    max_kl: float = 0.01
    #: TRPO's conjugate-gradient iterations
    cg_iters: int = 10
    #: damping of TRPO's Fisher-vector products
    cg_damping: float = 1e-5
    #: TRPO's line search: shrink factor per try, and number of tries
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15


def check_rl_options(options: RLOptions) -> None:
    """Refuse settings that cannot work, naming the option, its range and the fix."""
    if not 0 < options.gamma <= 1:
        raise ValueError(f"learner.gamma must be in (0, 1] (discount), got {options.gamma}")
    if not 0 <= options.gae_lambda <= 1:
        raise ValueError(f"learner.gae_lambda must be in [0, 1], got {options.gae_lambda}")
    if not (math.isfinite(options.max_kl) and options.max_kl > 0):
        raise ValueError(f"learner.max_kl must be > 0 (TRPO's KL bound, e.g. 0.01), got {options.max_kl}")
    if options.cg_iters < 1 or options.max_backtracks < 1:
        raise ValueError(f"learner.cg_iters and learner.max_backtracks must be >= 1, got {options.cg_iters} and "
                         f"{options.max_backtracks}")
    if not 0 < options.backtrack_ratio < 1:
        raise ValueError(f"learner.backtrack_ratio must be in (0, 1), got {options.backtrack_ratio}")


class EnvironmentLearner(MetaLearner):
    """A learner that acts in environments, built for one environment family's observation and action spaces.

    ``Learner(options, input_shape, speed=None, environment=family)``: ``input_shape`` is the observation's
    shape; ``environment`` gives the action space and the episode length.
    """

    task_kind = "reinforcement"

    def __init__(self, options: LearnerOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None,
                 environment: EnvFamily | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if environment is None:
            raise ValueError(f"learner {options.name!r} learns on environments: data.dataset must name an "
                             f"environment family (navigation2d, bandit-K, tabular-mdp, cheetah-dir, ...)")
        self.observation_space, self.action_space = environment.spaces
        self.observation_size = int(math.prod(input_shape))

    def predict(self, batch: Task) -> Tensor:
        raise TypeError(f"{type(self).__name__} acts in environments: score it with scores(batch) (metalab eval)")


class RLLearner(EnvironmentLearner):
    """An on-policy meta-RL learner (policy gradients, TRPO outer step)."""

    options: RLOptions
    divergence_hint = ", or lower learner.max_kl"

    def __init__(self, options: RLOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None,
                 environment: EnvFamily | None = None) -> None:
        super().__init__(options, input_shape, speed, environment)
        check_rl_options(options)

    def trpo(self) -> TRPO:
        o = self.options
        return TRPO(o.max_kl, o.cg_iters, o.cg_damping, o.backtrack_ratio, o.max_backtracks)

    def advantages(self, rollouts: Rollouts, dones: Tensor | None = None, per_task: bool = True) -> Tensor:
        """Normalised GAE advantages [T, N, H] with a linear feature baseline fitted on the rollouts' discounted
        returns (each task's own, or one for the whole batch); ``dones`` (default: the episodes' ends) cut the
        returns."""
        dones = rollouts.dones if dones is None else dones
        gamma, lam = self.options.gamma, self.options.gae_lambda
        returns = discounted_returns(rollouts.rewards, dones, gamma)
        if per_task:
            values = linear_baseline(rollouts.observations, returns, rollouts.mask)
        else:
            values = linear_baseline(rollouts.observations.flatten(0, 1).unsqueeze(0),
                                     returns.flatten(0, 1).unsqueeze(0), rollouts.mask.flatten(0, 1).unsqueeze(0))
            values = values.view_as(returns)
        return normalized(generalized_advantages(rollouts.rewards, values, dones, gamma, lam), rollouts.mask)


def mean_kl(old: torch.distributions.Distribution, new: torch.distributions.Distribution, mask: Tensor) -> Tensor:
    """Mean over valid steps of KL(old || new): a scalar."""
    kl = torch.distributions.kl_divergence(old, new)
    return (kl * mask).sum() / mask.sum().clamp_min(1)
