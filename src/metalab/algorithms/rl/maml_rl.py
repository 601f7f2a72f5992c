"""MAML for reinforcement learning (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", section 3.2 and Algorithm 3, https://arxiv.org/abs/1703.03400).

Per task T_i: sample K episodes with f_theta, take a policy-gradient step (REINFORCE with a linear baseline and
GAE, eq. 4) theta'_i = theta - alpha grad L_{T_i}(f_theta); sample episodes with f_theta'_i; the meta-objective
is the post-update return, sum_i L_{T_i}(f_theta'_i), optimised by TRPO (second order through the inner step,
or first order). With ``inner_steps: 0`` it is multi-task TRPO: the "pretrained" comparison of the paper's
figure 5, fine-tuned at evaluation by the same policy-gradient steps.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from metalab.algorithms.registry import register
from metalab.algorithms.rl.base import RLLearner, RLOptions, mean_kl
from metalab.algorithms.rl.components.policies import MLPPolicy
from metalab.algorithms.rl.components.policy_gradient import reinforce_loss, surrogate_loss, trpo_update
from metalab.algorithms.rl.components.rollouts import Rollouts, collect
from metalab.envs.tasks import EnvFamily, EnvTaskBatch
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import SGD, InnerLoop, Params, expand_for_tasks


@dataclass
class MAMLRLOptions(RLOptions):
    #: hidden layer sizes of the policy (the paper: two of 100 units, ReLU)
    hidden: list[int] = field(default_factory=lambda: [100, 100])
    #: "relu" or "tanh"
    activation: str = "relu"
    #: alpha, the inner policy-gradient step size
    inner_lr: float = 0.1
    #: inner policy-gradient steps in meta-training (each on fresh episodes of the adapted policy)
    inner_steps: int = 1
    #: gradient steps at evaluation: the return is reported after 0, 1, ..., eval_steps of them
    eval_steps: int = 3
    #: drop the second-order terms of the meta-gradient (the inner gradient is a constant)
    first_order: bool = False


@register("maml-rl")
class MAMLRL(RLLearner):
    """MAML-RL: a Gaussian (or categorical) MLP policy adapted per task by policy-gradient steps, meta-trained
    by TRPO on the post-update episodes."""

    options: MAMLRLOptions

    def __init__(self, options: MAMLRLOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None,
                 environment: EnvFamily | None = None) -> None:
        super().__init__(options, input_shape, speed, environment)
        if options.inner_steps < 0 or options.eval_steps < 0:
            raise ValueError(f"learner.inner_steps and learner.eval_steps must be >= 0, got {options.inner_steps} "
                             f"and {options.eval_steps}")
        if not options.inner_lr >= 0:
            raise ValueError(f"learner.inner_lr must be >= 0, got {options.inner_lr}")
        self.policy = MLPPolicy(self.observation_size, self.action_space, options.hidden, options.activation)
        self.inner = InnerLoop(steps=options.inner_steps, rule=SGD(options.inner_lr),
                               first_order=options.first_order)

    # ----------------------------------------------------------------------------- adaptation
    def _log_probs(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The inner loop's forward: x = [observations, actions] [T, M, D + A] -> log pi(a|o) [T, M]."""
        observations, actions = x[..., : self.observation_size], x[..., self.observation_size:]
        if self.policy.discrete:
            actions = actions[..., 0].long()
        return self.policy.distribution(observations, params).log_prob(actions)

    @staticmethod
    def _inner_objective(params: Mapping[str, Tensor], log_probs: Tensor, targets: Tensor) -> Tensor:
        """REINFORCE's loss per task from targets [T, M, 2] = (advantage, mask): [T]."""
        return reinforce_loss(log_probs, targets[..., 0], targets[..., 1])

    def adapted(self, rollouts: list[Rollouts], create_graph: bool) -> Params:
        """theta after one policy-gradient step on each of ``rollouts`` in turn (step k on rollouts[k], sampled
        with the parameters after k steps): parameters by name with a leading task dimension [T, ...]."""
        params: Params = dict(self.policy.named_parameters())
        if not rollouts:
            return params
        names = list(params)
        with torch.enable_grad():  # the inner gradients, even where the caller computes without a graph
            fast = expand_for_tasks(params, names, len(rollouts[0].rewards))
            for k, episodes in enumerate(rollouts):
                actions = episodes.actions.unsqueeze(-1).float() if self.policy.discrete else episodes.actions
                x = torch.cat([episodes.observations, actions], -1).flatten(1, 2)
                y = torch.stack([self.advantages(episodes), episodes.mask], -1).flatten(1, 2)
                grads = self.inner.gradients(self._log_probs, fast, x, y, names, self._inner_objective,
                                             create_graph)
                fast, _ = self.inner.rule.step(fast, dict(zip(names, grads)), None, k, {})
        return fast

    def rollouts(self, batch: EnvTaskBatch, steps: int, last_copies: int) -> list[Rollouts]:
        """Episodes of the policy after 0, 1, ..., ``steps`` adaptation steps: ``batch.shots`` per task for each
        step, ``last_copies`` after the last; ``steps + 1`` rollouts."""
        collected: list[Rollouts] = []
        for k in range(steps + 1):
            fast = {name: value.detach() for name, value in self.adapted(collected, create_graph=False).items()}
            copies = batch.shots if k < steps else last_copies
            collected.append(collect(batch, copies, partial(self.policy.distribution, params=fast), round_=k))
        return collected

    # ------------------------------------------------------------------------------ meta-step
    def exploration_loss(self, pre: list[Rollouts], post: Rollouts, graph: bool) -> Tensor:
        """A term added to the outer loss (E-MAML's); none for MAML-RL."""
        return torch.zeros(())

    def meta_step(self, batch: EnvTaskBatch) -> dict[str, Tensor]:  # type: ignore[override]  # environment tasks
        *pre, post = self.rollouts(batch, self.options.inner_steps, batch.queries)
        advantages = self.advantages(post)
        sampled = {name: value.detach() for name, value in self.adapted(pre, create_graph=False).items()}
        old = self.policy.distribution(post.observations, sampled)
        second_order = not self.options.first_order

        def objective(graph: bool) -> tuple[Tensor, Tensor]:
            fast = self.adapted(pre, create_graph=graph and second_order)
            with torch.set_grad_enabled(graph):
                policy = self.policy.distribution(post.observations, fast)
                losses = surrogate_loss(policy.log_prob(post.actions), post.log_probs, advantages, post.mask)
                loss = losses.mean() + self.exploration_loss(pre, post, graph)
                return loss, mean_kl(old, policy, post.mask)

        update = trpo_update(list(self.policy.parameters()), objective, self.trpo())
        metrics = {**update, "return": post.returns().mean()}
        if pre:
            metrics["return_pre"] = pre[0].returns().mean()
        return metrics

    def scores(self, batch: EnvTaskBatch) -> dict[str, Tensor]:
        """Mean return per task after k = 0, ..., eval_steps - 1 steps (``return_k``, on ``batch.shots`` episodes)
        and after eval_steps (``return``, on ``batch.queries`` episodes)."""
        *stages, last = self.rollouts(batch, self.options.eval_steps, batch.queries)
        return {"return": last.returns().mean(1), **{f"return_{k}": r.returns().mean(1) for k, r in enumerate(stages)}}
