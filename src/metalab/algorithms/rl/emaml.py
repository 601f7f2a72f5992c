"""E-MAML (Stadie et al. 2018, "Some Considerations on Learning to Explore via Meta-Reinforcement Learning",
section 4, https://arxiv.org/abs/1803.01118).

MAML-RL's meta-gradient ignores that the pre-update episodes were sampled by pi_theta: the post-update return
R(tau') also depends on theta through which pre-update episodes tau were drawn. E-MAML adds that
score-function term, E[R(tau') grad_theta log pi_theta(tau)], so that the pre-update policy is credited for
exploring in a way that makes the update pay off. Here, in TRPO's surrogate form, each pre-update step gets
the ratio pi_theta / pi_theta_old times its task's post-update return (normalised over the meta-batch, as the
advantages are), weighted by ``exploration_weight``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metalab.algorithms.registry import register
from metalab.algorithms.rl.components.policy_gradient import surrogate_loss
from metalab.algorithms.rl.components.rollouts import Rollouts
from metalab.algorithms.rl.maml_rl import MAMLRL, MAMLRLOptions


@dataclass
class EMAMLOptions(MAMLRLOptions):
    #: lambda, the weight of the exploration term (the pre-update episodes' credit for the post-update return)
    exploration_weight: float = 1.0


@register("emaml")
class EMAML(MAMLRL):
    """MAML-RL with the exploration term of E-MAML in the outer objective."""

    options: EMAMLOptions

    def exploration_loss(self, pre: list[Rollouts], post: Rollouts, graph: bool) -> Tensor:
        if not pre:
            return torch.zeros(())
        first = pre[0]  # sampled by pi_theta itself: the episodes whose sampling the term credits
        returns = post.returns().mean(1)  # [T]
        credit = (returns - returns.mean()) / (returns.std() + 1e-8) if len(returns) > 1 else returns * 0
        credit = credit.view(-1, 1, 1).expand_as(first.rewards) * first.mask
        with torch.set_grad_enabled(graph):
            log_probs = self.policy.distribution(first.observations).log_prob(first.actions)
            return self.options.exploration_weight * surrogate_loss(log_probs, first.log_probs, credit,
                                                                   first.mask).mean()
