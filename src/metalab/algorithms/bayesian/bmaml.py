"""BMAML (Yoon et al. 2018, "Bayesian Model-Agnostic Meta-Learning"): a task's posterior as M particles moved by
Stein variational gradient descent, meta-trained with the chaser loss.

Bayesian fast adaptation (section 3.1): the meta-learned initial particles Theta_0 = {theta_0^m}, m = 1..M, take n
SVGD steps (:class:`~metalab.algorithms.bayesian.base.SVGD`, Liu & Wang 2016, RBF kernel with the median-heuristic
bandwidth h = med^2 / log M) toward the task posterior

    log p(theta | D) = log p(D | theta) + log N(theta; 0, prior_precision^-1 I) + const.

Chaser loss (section 3.2): the chaser Theta^n = SVGD_n(Theta_0; D^trn) should already be where the leader, s more
steps on train and validation data, Theta^{n+s} = SVGD_s(Theta^n; D^trn u D^val), is; the leader is a target
(stop-gradient) and the meta-objective is the distance between them,

    L(Theta_0) = (1/T) sum_tau sum_m ||theta^{n,m}_tau - stopgrad(theta^{n+s,m}_tau)||^2,

back-propagated through the chaser's n steps. At test time the particles take n steps on the support set and the
predictive distribution is the equal mixture of the M particle networks.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalab.algorithms.bayesian.base import SVGD, BayesianLearner, BayesianOptions, repeat_samples
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import Objective, Params, UpdateRule


@dataclass
class BMAMLOptions(BayesianOptions):
    #: M, the particles of each task's posterior (and of the meta-learned initialisation).
    particles: int = 5
    #: s, the leader's further SVGD steps on support + query beyond the chaser's n = ``inner_steps``.
    leader_steps: int = 1
    #: the precision of the Gaussian prior N(0, prior_precision^-1 I) on each particle's parameters (0: flat).
    prior_precision: float = 0.0


@register("bmaml")
class BMAML(BayesianLearner):
    """M particles, SVGD inner loop (step size ``inner_lr``), chaser loss; see the module docstring."""

    options: BMAMLOptions

    def __init__(self, options: BMAMLOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.particles < 1:
            raise ValueError(f"learner.particles must be >= 1 (M, particles per task), got {options.particles}")
        if options.leader_steps < 1:
            raise ValueError(f"learner.leader_steps must be >= 1 (s, the leader's steps beyond the chaser's), "
                             f"got {options.leader_steps}")
        if not options.prior_precision >= 0:
            raise ValueError(f"learner.prior_precision must be >= 0 (0: a flat prior), got {options.prior_precision}")
        #: Theta_0: one tensor [M, ...] per adapted parameter, in the order of ``adapted_names()``; particle m is
        #: the network's own initialisation drawn afresh (the network's adapted tensors are a frozen template).
        self.particles = nn.ParameterList(nn.Parameter(value) for value in self.initial_particles(options.particles))

    def initial_particles(self, count: int) -> list[Tensor]:
        """``count`` draws of the network's initialisation, stacked per adapted tensor: [count, ...] each."""
        draws = []
        for _ in range(count):
            for module in self.network.modules():
                reset = getattr(module, "reset_parameters", None)
                if module is not self.network and callable(reset):
                    reset()
            draws.append([self.network.get_parameter(name).detach().clone() for name in self.adapted_names()])
        for name in self.adapted_names():
            self.network.get_parameter(name).requires_grad_(False)
        return [torch.stack(values) for values in zip(*draws)]

    def particle_parameters(self, tasks: int) -> Params:
        """Every network parameter by name, the adapted ones as Theta_0 for T tasks: [T * M, ...] (task-major)."""
        theta0 = {name: value.repeat(tasks, *([1] * (value.dim() - 1)))
                  for name, value in zip(self.adapted_names(), self.particles)}
        return {**self.parameters_by_name(), **theta0}

    def update_rule(self, training: bool) -> UpdateRule:
        return SVGD(self.options.inner_lr, self.options.particles)

    def support_objective(self) -> Objective:
        """-log p(theta | D) + const of each particle: the negative log-likelihood plus the Gaussian prior's term."""
        precision, adapted = self.options.prior_precision, self.adapted_names()

        def objective(params: Mapping[str, Tensor], outputs: Tensor, targets: Tensor) -> Tensor:
            prior = sum(params[n].pow(2).flatten(1).sum(1) for n in adapted) if precision else 0.0
            return self.negative_log_likelihood(outputs, targets) + 0.5 * precision * prior

        return objective

    def chaser(self, support_x: Tensor, support_y: Tensor, training: bool) -> Params:
        """Theta^n: n SVGD steps from Theta_0 on each task's support set (adapted names [T * M, ...])."""
        particles = self.options.particles
        return self.adapt_from(self.particle_parameters(support_x.shape[0]), repeat_samples(support_x, particles),
                               repeat_samples(support_y, particles), training)

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """The chaser loss's gradient into ``.grad`` (Theta_0 and the shared parameters); query metrics."""
        self.check_batch(batch)
        particles, adapted = self.options.particles, self.adapted_names()
        chaser = self.chaser(batch.support_x, batch.support_y, training=True)
        both_x = repeat_samples(torch.cat([batch.support_x, batch.query_x], 1), particles)
        both_y = repeat_samples(torch.cat([batch.support_y, batch.query_y], 1), particles)
        leader = self.adapt_from({**chaser, **{n: chaser[n].detach() for n in adapted}}, both_x, both_y,
                                 training=True, steps=self.options.leader_steps, keep_graph=False)
        distance = sum((chaser[n] - leader[n].detach()).pow(2).flatten(1).sum(1) for n in adapted)
        loss = torch.as_tensor(distance).view(len(batch), particles).sum(1).mean()
        loss.backward()
        record = self.batch_norm_record()
        with torch.no_grad():
            outputs = self.sampled_forward(chaser, batch.query_x, particles, training=True, record=record)
        self.record_batch_norm(record, len(batch))
        return self.sample_metrics(outputs, batch.query_y, loss)

    def sample_outputs(self, batch: Task) -> Tensor:
        """The M adapted particles' outputs on each task's queries: [T, M, Q, ...]."""
        chaser = self.chaser(batch.support_x, batch.support_y, training=False)
        with torch.no_grad():
            return self.sampled_forward(chaser, batch.query_x, self.options.particles, training=False)
