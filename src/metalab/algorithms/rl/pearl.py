"""PEARL (Rakelly et al. 2019, "Efficient Off-Policy Meta-Reinforcement Learning via Probabilistic Context
Variables", Algorithms 1 and 2, https://arxiv.org/abs/1903.08254; settings from the authors' ``oyster`` code).

A task is inferred, not adapted to: a context encoder turns transitions (s, a, r) into Gaussian factors whose
product is the posterior q(z | c) over a latent z (:mod:`~metalab.algorithms.rl.components.context`), and a soft
actor-critic conditioned on z (:mod:`~metalab.algorithms.rl.components.sac`) acts. Off-policy: every training
task keeps an RL replay buffer (all its transitions, which train the actor-critic) and an encoder buffer (its
recent transitions, which the context is drawn from). One trainer step (an iteration of Algorithm 1) is

1. data: for each of the step's ``task.meta_batch`` tasks (a fixed pool, ``data.task_pool``; a task met for the
   first time first gets ``initial_episodes`` with z ~ prior), clear its encoder buffer, then collect
   ``prior_episodes`` with z ~ r(z) and ``posterior_episodes`` with z ~ q(z | c) into both buffers, and
   ``extra_posterior_episodes`` into the RL buffer only (a posterior episode acts with z ~ q(z | c), c being
   ``context_batch`` transitions of the encoder buffer, re-drawn after every episode; the first acts with z ~ prior
   only where the encoder buffer is still empty);
2. ``updates_per_step`` gradient steps, each on ``train_meta_batch`` tasks drawn from the pool: the critic loss
   (Q's Bellman error, eq. 3 of the paper's section 4.2) plus kl_lambda * KL(q(z | c) || N(0, I)) (eq. 2)
   trains the Q networks and the encoder; V and the policy are trained with z detached.

Meta-test (Algorithm 2): posterior sampling. Episode 0 acts with z from the prior; after each episode the
posterior is inferred from all the transitions collected so far on that task and a new z drawn from it.
``scores`` reports the return after 0, 1, ..., ``eval_context_episodes`` episodes of context.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gymnasium as gym
import torch
from torch import Tensor

from metalab.algorithms.base import LearnerOptions
from metalab.algorithms.registry import register
from metalab.algorithms.rl.base import EnvironmentLearner
from metalab.algorithms.rl.components.context import ContextEncoder, kl_to_unit_gaussian, sample_latent
from metalab.algorithms.rl.components.replay import TaskReplayBuffers
from metalab.algorithms.rl.components.rollouts import Rollouts, collect, generator_for
from metalab.algorithms.rl.components.sac import (
    Critic,
    SquashedGaussian,
    TanhGaussianPolicy,
    action_bounds,
    q_target,
    soft_update,
    v_target,
)
from metalab.envs.tasks import EnvFamily, EnvTaskBatch
from metalab.nn.execution import SpeedOptions

#: the rounds (environment reset and action seeds) of meta-test episodes are numbered from here, so that they never
#: meet the rounds of the training collection
EVAL_ROUND = 2**31


@dataclass
class PEARLOptions(LearnerOptions):
    #: dimension of the task latent z (the paper: 5)
    latent_size: int = 5
    #: hidden layers of the policy, Q and V networks (the paper: 3 of 300 units)
    hidden: list[int] = field(default_factory=lambda: [300, 300, 300])
    #: hidden layers of the context encoder (the authors': 3 of 200)
    encoder_hidden: list[int] = field(default_factory=lambda: [200, 200, 200])
    #: Adam learning rates of the policy, the Q networks, V and the encoder (the paper: 3e-4 each)
    policy_lr: float = 3e-4
    qf_lr: float = 3e-4
    vf_lr: float = 3e-4
    context_lr: float = 3e-4
    #: beta, the weight of KL(q(z | c) || N(0, I)) in the encoder's loss (the paper: 0.1)
    kl_lambda: float = 0.1
    #: rewards are multiplied by this in the Q target (SAC's inverse entropy weight)
    reward_scale: float = 5.0
    #: discount gamma
    gamma: float = 0.99
    #: tau of V's target network: target <- (1 - tau) target + tau V after each step
    soft_target_tau: float = 0.005
    #: weights of the policy's mean and log-std regularisers (the authors': 1e-3)
    policy_mean_reg: float = 1e-3
    policy_std_reg: float = 1e-3
    #: transitions per task in the RL batch of a gradient step (the paper: 256)
    batch_size: int = 256
    #: transitions per task in the context of a gradient step (the authors': 64 to 256 by environment)
    context_batch: int = 64
    #: tasks per gradient step (the authors' meta_batch: 16)
    train_meta_batch: int = 16
    #: gradient steps per trainer step (the authors': 1000 to 2000 per iteration)
    updates_per_step: int = 2000
    #: episodes collected with z ~ prior on a task the first time it is met (num_initial_steps / horizon)
    initial_episodes: int = 10
    #: episodes per task and step with z ~ prior, into both buffers (num_steps_prior / horizon)
    prior_episodes: int = 2
    #: episodes per task and step with z ~ posterior, into both buffers (num_steps_posterior / horizon)
    posterior_episodes: int = 0
    #: episodes per task and step with z ~ posterior, into the RL buffer only (num_extra_rl_steps_posterior / horizon)
    extra_posterior_episodes: int = 2
    #: transitions kept per task in each replay buffer
    replay_capacity: int = 1_000_000
    #: put s' in the context as well (tasks that differ in their dynamics)
    next_obs_in_context: bool = False
    #: meta-test: the return is reported after 0, 1, ..., this many episodes of context
    eval_context_episodes: int = 2
    #: meta-test acts with the policy's mean action (the authors' eval_deterministic)
    deterministic_eval: bool = True


def check_pearl_options(o: PEARLOptions) -> None:
    """Refuse settings that cannot work, naming the option, its range and the fix."""
    positive = {"latent_size": o.latent_size, "batch_size": o.batch_size, "context_batch": o.context_batch,
                "train_meta_batch": o.train_meta_batch, "initial_episodes": o.initial_episodes,
                "replay_capacity": o.replay_capacity}
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"learner.{name} must be >= 1, got {value}")
    rates = {"policy_lr": o.policy_lr, "qf_lr": o.qf_lr, "vf_lr": o.vf_lr, "context_lr": o.context_lr}
    for name, rate in rates.items():
        if not rate > 0:
            raise ValueError(f"learner.{name} must be > 0 (the paper: 3e-4), got {rate}")
    counts = {"updates_per_step": o.updates_per_step, "prior_episodes": o.prior_episodes,
              "posterior_episodes": o.posterior_episodes, "extra_posterior_episodes": o.extra_posterior_episodes,
              "eval_context_episodes": o.eval_context_episodes}
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"learner.{name} must be >= 0, got {value}")
    if o.prior_episodes + o.posterior_episodes < 1:
        raise ValueError("learner.prior_episodes + learner.posterior_episodes must be >= 1: the encoder buffer, "
                         "which the context is drawn from, is refilled from them at every step")
    if not 0 < o.gamma <= 1:
        raise ValueError(f"learner.gamma must be in (0, 1] (discount), got {o.gamma}")
    if not 0 < o.soft_target_tau <= 1:
        raise ValueError(f"learner.soft_target_tau must be in (0, 1], got {o.soft_target_tau}")
    if o.kl_lambda < 0 or o.reward_scale <= 0:
        raise ValueError(f"learner.kl_lambda must be >= 0 and learner.reward_scale > 0, got {o.kl_lambda} and "
                         f"{o.reward_scale}")


@register("pearl")
class PEARL(EnvironmentLearner):
    """PEARL: a context encoder (product of Gaussian factors) and a soft actor-critic conditioned on its latent,
    trained off-policy from per-task replay buffers. Box action spaces only (a tanh-Gaussian policy)."""

    options: PEARLOptions
    action_low: Tensor
    action_high: Tensor
    divergence_hint = ", or lower learner.reward_scale and the learning rates (learner.policy_lr, qf_lr, ...)"

    def __init__(self, options: PEARLOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None,
                 environment: EnvFamily | None = None) -> None:
        super().__init__(options, input_shape, speed, environment)
        check_pearl_options(options)
        if not isinstance(self.action_space, gym.spaces.Box) or len(self.action_space.shape) != 1:
            raise ValueError(f"learner pearl acts in Box (vector) action spaces (a tanh-Gaussian policy), got "
                             f"{self.action_space}: use rl2 for discrete actions")
        low, high = action_bounds(self.action_space.low, self.action_space.high)
        self.register_buffer("action_low", low, persistent=False)
        self.register_buffer("action_high", high, persistent=False)
        d, a, latent, hidden = self.observation_size, int(low.numel()), options.latent_size, options.hidden
        context_size = d + a + 1 + (d if options.next_obs_in_context else 0)
        self.encoder = ContextEncoder(context_size, latent, options.encoder_hidden)
        self.policy = TanhGaussianPolicy(d + latent, a, hidden)
        self.qf1, self.qf2 = Critic(d + a + latent, hidden), Critic(d + a + latent, hidden)
        self.vf = Critic(d + latent, hidden)
        self.target_vf = copy.deepcopy(self.vf).requires_grad_(False)
        adam = torch.optim.Adam
        self.optimizers = {
            "policy": adam(self.policy.parameters(), lr=options.policy_lr),
            "qf": adam([*self.qf1.parameters(), *self.qf2.parameters()], lr=options.qf_lr),
            "vf": adam(self.vf.parameters(), lr=options.vf_lr),
            "context": adam(self.encoder.parameters(), lr=options.context_lr),
        }
        self.rl_buffer = TaskReplayBuffers(options.replay_capacity)
        self.encoder_buffer = TaskReplayBuffers(options.replay_capacity)
        #: draws the gradient steps' tasks, transitions and noises (seeded from torch's global generator, which
        #: the trainer seeds with train.seed; saved in checkpoints)
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        #: rollouts collected so far: numbers their environment and action seeds
        self.rounds = 0

    # ------------------------------------------------------------------------------ checkpoints
    def get_extra_state(self) -> dict[str, Any]:
        """What a checkpoint stores besides the weights, for an exact resume: the optimisers' moments, both replay
        buffers, the generator's state and the rollout counter."""
        return {"optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "rl_buffer": self.rl_buffer.state(), "encoder_buffer": self.encoder_buffer.state(),
                "generator": self.generator.get_state(), "rounds": self.rounds}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.rl_buffer.load(state["rl_buffer"])
        self.encoder_buffer.load(state["encoder_buffer"])
        self.generator.set_state(state["generator"])
        self.rounds = int(state["rounds"])

    # ------------------------------------------------------------------------------ acting
    def _noise(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.generator).to(self.action_low.device)

    def acting(self, observations: Tensor, z: Tensor, deterministic: bool = False) -> SquashedGaussian:
        """pi(. | s, z) in the environment's bounds: observations [T, N, D], z [T, L] or [T, N, L]."""
        if z.dim() == 2:
            z = z.unsqueeze(1).expand(*observations.shape[:2], -1)
        mean, log_std = self.policy.gaussian(torch.cat([observations, z], -1))
        return SquashedGaussian(mean, log_std, self.action_low, self.action_high, deterministic)

    def context_of(self, fields: dict[str, Tensor]) -> Tensor:
        """The encoder's input [..., C] from transitions' fields [...] (o, a in [-1, 1], r[, s'])."""
        parts = [fields["observations"], fields["actions"], fields["rewards"].unsqueeze(-1)]
        if self.options.next_obs_in_context:
            parts.append(fields["next_observations"])
        return torch.cat(parts, -1)

    def transitions(self, rollouts: Rollouts) -> dict[str, Tensor]:
        """The rollouts' fields per step [T, N, H, ...], actions normalised to [-1, 1]."""
        assert rollouts.next_observations is not None and rollouts.terminals is not None  # collect() records them
        low, high = self.action_low, self.action_high
        return {"observations": rollouts.observations, "actions": ((rollouts.actions - (high + low) / 2)
                                                                   / ((high - low) / 2)).clamp(-1, 1),
                "rewards": rollouts.rewards, "next_observations": rollouts.next_observations,
                "terminals": rollouts.terminals}

    def _episode(self, batch: EnvTaskBatch, z: Tensor) -> Rollouts:
        """One episode per task of ``batch`` with z [T, L], on fresh environment and action seeds."""
        self.rounds += 1
        return collect(batch, 1, lambda o: self.acting(o, z), round_=self.rounds)

    def _posterior_sample(self, keys: list[str]) -> Tensor:
        """z ~ q(z | c), c drawn from each task's encoder buffer: [T, L]."""
        with torch.no_grad():
            context = self.context_of(self.encoder_buffer.sample(keys, self.options.context_batch, self.generator))
            mean, variance = self.encoder.posterior(context.to(self.action_low.device))
        return sample_latent(mean, variance, self._noise(*mean.shape))

    def _collect(self, batch: EnvTaskBatch, keys: list[str], episodes: int, posterior: bool,
                 to_encoder: bool) -> list[Tensor]:
        """``episodes`` episodes per task, stored in the RL buffer (and the encoder buffer); their returns [T].

        ``posterior``: every episode acts with z ~ q(z | c), c drawn from the encoder buffer and re-drawn after each
        episode; the first acts with z ~ prior only where a task's encoder buffer is empty. (The authors' loop
        starts every phase from the prior, which with their 5 to 45 episodes per phase costs one; with the
        scaled-down 1 posterior episode per step it meant that no episode ever acted with a posterior z.)
        Otherwise every episode acts with z ~ prior."""
        ready = posterior and all(self.encoder_buffer.size(key) > 0 for key in keys)
        z = self._posterior_sample(keys) if ready else self._noise(len(batch), self.options.latent_size)
        returns = []
        for _ in range(episodes):
            rollouts = self._episode(batch, z)
            fields = self.transitions(rollouts)
            for t, key in enumerate(keys):
                valid = rollouts.mask[t].bool()
                chosen = {name: value[t][valid].detach().cpu() for name, value in fields.items()}
                self.rl_buffer.add(key, chosen)
                if to_encoder:
                    self.encoder_buffer.add(key, chosen)
            returns.append(rollouts.returns()[:, 0])
            if posterior:
                z = self._posterior_sample(keys)
        return returns

    # ------------------------------------------------------------------------------ losses
    def critic_loss(self, context: Tensor, rl: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The Q networks' Bellman error on the RL batch (fields [B, N, ...]) with z ~ q(z | context [B, C, .]) and
        the KL of the posteriors to the prior (summed over the B tasks, as the authors'). Returns (Q loss, KL, z
        [B, N, L]); z keeps its graph to the encoder, which the Q loss (and the KL) train."""
        o = self.options
        mean, variance = self.encoder.posterior(context)
        z = sample_latent(mean, variance, self._noise(*mean.shape))
        z = z.unsqueeze(1).expand(-1, rl["observations"].shape[1], -1)
        obs, actions = rl["observations"], rl["actions"]
        with torch.no_grad():
            target = q_target(rl["rewards"], rl["terminals"], self.target_vf(rl["next_observations"], z), o.gamma,
                              o.reward_scale)
        q_loss = ((self.qf1(obs, actions, z) - target) ** 2).mean() + ((self.qf2(obs, actions, z) - target) ** 2).mean()
        return q_loss, kl_to_unit_gaussian(mean, variance).sum(), z

    def actor_losses(self, observations: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """V's and the policy's losses on observations [B, N, D] with z [B, N, L], which they see detached: the
        encoder learns from the critic only."""
        o = self.options
        z = z.detach()
        inputs = torch.cat([observations, z], -1)
        out = self.policy(inputs, self._noise(*observations.shape[:-1], self.policy.action_size))
        q1, q2 = self.qf1(observations, out.actions, z), self.qf2(observations, out.actions, z)
        min_q = torch.minimum(q1, q2)
        v_loss = ((self.vf(observations, z) - v_target(q1, q2, out.log_prob).detach()) ** 2).mean()
        policy_loss = ((out.log_prob - min_q).mean() + o.policy_mean_reg * (out.mean**2).mean()
                       + o.policy_std_reg * (out.log_std**2).mean())
        return v_loss, policy_loss

    def update(self) -> dict[str, Tensor]:
        """One gradient step of the encoder, Q, V and the policy on ``train_meta_batch`` tasks of the buffers."""
        o = self.options
        keys = self.rl_buffer.keys()
        tasks = [keys[int(i)] for i in torch.randint(len(keys), (o.train_meta_batch,), generator=self.generator)]
        device = self.action_low.device
        context = self.context_of(self.encoder_buffer.sample(tasks, o.context_batch, self.generator)).to(device)
        rl = {k: v.to(device) for k, v in self.rl_buffer.sample(tasks, o.batch_size, self.generator).items()}
        q_loss, kl, z = self.critic_loss(context, rl)
        self._step(("qf", "context"), q_loss + o.kl_lambda * kl)
        v_loss, policy_loss = self.actor_losses(rl["observations"], z)
        self._step(("vf",), v_loss)
        soft_update(self.target_vf, self.vf, o.soft_target_tau)
        self._step(("policy",), policy_loss)
        return {"loss": q_loss.detach(), "kl": kl.detach(), "vf_loss": v_loss.detach(),
                "policy_loss": policy_loss.detach()}

    def _step(self, names: tuple[str, ...], loss: Tensor) -> None:
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        for name in names:
            self.optimizers[name].step()

    # ------------------------------------------------------------------------------ the trainer's interface
    def meta_step(self, batch: EnvTaskBatch) -> dict[str, Tensor]:  # type: ignore[override]  # environment tasks
        o = self.options
        keys = [str(seed) for seed in batch.seeds]
        new = [t for t, key in enumerate(keys) if self.rl_buffer.size(key) == 0]
        if new:
            first = EnvTaskBatch(batch.family, [batch.tasks[t] for t in new], [batch.seeds[t] for t in new],
                                 batch.shots, batch.queries, batch.device)
            self._collect(first, [keys[t] for t in new], o.initial_episodes, posterior=False, to_encoder=True)
        for key in keys:
            self.encoder_buffer.clear(key)
        prior = self._collect(batch, keys, o.prior_episodes, posterior=False, to_encoder=True)
        posterior = self._collect(batch, keys, o.posterior_episodes, posterior=True, to_encoder=True)
        posterior += self._collect(batch, keys, o.extra_posterior_episodes, posterior=True, to_encoder=False)
        sums: dict[str, Tensor] = {}
        for _ in range(o.updates_per_step):
            for name, value in self.update().items():
                sums[name] = sums.get(name, torch.zeros(())) + value.cpu()
        self.zero_grad(set_to_none=True)  # the updates are applied: nothing for the trainer's optimiser
        metrics = {name: value / max(o.updates_per_step, 1) for name, value in sums.items()}
        metrics.setdefault("loss", torch.zeros(()))
        collected = prior + posterior
        metrics["return"] = torch.stack(collected).mean()
        metrics["return_prior"] = torch.stack(prior).mean()
        metrics["buffer_tasks"] = torch.tensor(float(len(self.rl_buffer)))
        return metrics

    @torch.no_grad()
    def context_rollouts(self, batch: EnvTaskBatch) -> list[Rollouts]:
        """Meta-test by posterior sampling: ``batch.queries`` independent runs per task of
        ``eval_context_episodes + 1`` episodes; episode 0 with z ~ prior, episode k with z ~ q(z | the k episodes
        before it). One rollout per episode, [T, queries, H]."""
        o = self.options
        copies = batch.queries
        noise = generator_for(batch, EVAL_ROUND)
        mean = torch.zeros(len(batch), copies, o.latent_size, device=batch.device)
        variance = torch.ones_like(mean)
        episodes: list[Rollouts] = []
        contexts: list[Tensor] = []
        masks: list[Tensor] = []
        for k in range(o.eval_context_episodes + 1):
            eps = torch.randn(mean.shape, generator=noise, device=batch.device)
            z = sample_latent(mean, variance, eps)
            rollouts = collect(batch, copies, partial(self.acting, z=z, deterministic=o.deterministic_eval),
                               round_=EVAL_ROUND + k)
            episodes.append(rollouts)
            contexts.append(self.context_of(self.transitions(rollouts)))
            masks.append(rollouts.mask)
            mean, variance = self.encoder.posterior(torch.cat(contexts, 2), torch.cat(masks, 2))
        return episodes

    def scores(self, batch: EnvTaskBatch) -> dict[str, Tensor]:
        """Mean return per task of the episode after k = 0, ..., K - 1 episodes of context (``return_k``) and after
        K = eval_context_episodes (``return``)."""
        *stages, last = self.context_rollouts(batch)
        return {"return": last.returns().mean(1), **{f"return_{k}": r.returns().mean(1) for k, r in enumerate(stages)}}

