"""A mixture of meta-learned initialisations that grows with the task stream (Jerfel et al. 2019, "Reconciling
meta-learning and continual learning with online mixtures of tasks", the Dirichlet-process variant).

K initialisations theta_1..theta_K; task t's parameters come from one of them, z_t ~ CRP(alpha):

    E-step   gamma_tk = p(z_t = k | D_t) ~ pi_k exp(log p(D_t | phi_tk)),   phi_tk = U(theta_k, D_t^support)
             pi_k = n_k / (n + alpha) for an existing component, alpha / (n + alpha) for a new one
             log p(D | phi) = -sum loss / (2 noise^2)   (regression: Gaussian noise; classification: noise^2 = 1/2)
    M-step   theta_k <- theta_k - beta grad sum_t gamma_tk L_query(phi_tk)      (a responsibility-weighted MAML
                                                                               meta-gradient for every component)
             n_k <- n_k + sum_t gamma_tk

Growth: in each meta-training batch, the task the mixture explains least (lowest MAP log-posterior) proposes a
candidate component, its most likely component after ``spawn_steps`` plain gradient steps on its support set. The
candidate stands for the CRP's new table. In a DP mixture the new table's likelihood is the prior predictive, its
parameters are not fitted to the datum they score (Neal 2000, "Markov chain sampling methods for Dirichlet process
mixture models", algorithm 8: the new tables' parameters come from the base measure G0, independently of the
observation). Scored on the task it was fitted to, the candidate's evidence is inflated by the fit itself, and the
mixture grew within one family (4 components after a stream stage of sinusoids alone). So the candidate is scored
on the batch's *other* tasks: it joins the mixture when it is the MAP component (new-table prior
alpha / (n + alpha) included) of at least a share ``spawn_share`` of them, and of one at least: a family that no
component adapts to, not one task. Up to ``max_components``, once every component holds ``grow_after`` tasks' worth
of responsibility; it starts with the count of one task. The warm-started candidate and ``spawn_share`` are this
file's choices, not the paper's. The likelihood of a training task is scored on its query set after adaptation
(data the inner loop did not fit); at test time, on the support set, the only labelled data.

Prediction adapts from the task's most likely component (MAP assignment, ``assignments``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalab.algorithms.gradient.base import GradientLearner, GradientOptions
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import SGD, InnerLoop, Params


@dataclass
class TaskMixtureOptions(GradientOptions):
    #: alpha, the CRP concentration: the prior mass of a new component.
    concentration: float = 1.0
    #: the most components the mixture grows to.
    max_components: int = 8
    #: plain gradient steps that specialise a candidate component to the task before it is scored.
    spawn_steps: int = 10
    #: step size of those steps.
    spawn_lr: float = 0.01
    #: the likelihood's noise standard deviation (regression): log p = -sum squared error / (2 noise^2).
    noise: float = 1.0
    #: the share of the batch's other tasks (not the one that proposed it) whose MAP component the candidate must be
    #: to join the mixture (at least one task); 0.5: most of them, a new family that fills the batch (a stream).
    spawn_share: float = 0.5
    #: tasks' worth of responsibility every component must hold before the mixture may grow (a component is
    #: judged once it has been trained; 0: from the first step).
    grow_after: float = 100.0


@register("task-mixture")
class TaskMixture(GradientLearner):
    """A growing mixture of MAML initialisations with CRP-prior EM assignments (see the module docstring)."""

    options: TaskMixtureOptions
    counts: Tensor  # n_k, the CRP's (soft) counts [max_components]
    active: Tensor  # K, the components in use (a scalar)

    def __init__(self, options: TaskMixtureOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.max_components < 1 or not options.concentration > 0 or not options.noise > 0:
            raise ValueError(f"learner.max_components must be >= 1, learner.concentration and learner.noise > 0; got "
                             f"{options.max_components}, {options.concentration}, {options.noise}")
        if not 0 <= options.spawn_share <= 1:
            raise ValueError(f"learner.spawn_share must be in [0, 1] (a share of the batch's tasks), got "
                             f"{options.spawn_share}")
        # theta_k for every k, stacked [max_components, ...], all starting at the network's initial weights (which
        # then only give the shapes: every forward pass reads the components)
        self.components = nn.ParameterDict({
            name.replace(".", "_"): nn.Parameter(value.detach().unsqueeze(0).repeat(options.max_components,
                                                                                    *[1] * value.dim()))
            for name, value in self.network.named_parameters()})
        self.register_buffer("counts", torch.zeros(options.max_components))
        self.counts[0] = 1.0  # the first component's pseudo-count: the prior of the first task
        self.register_buffer("active", torch.tensor(1))
        self._starts: Params | None = None  # the starting points of the next adaptation, when chosen by hand

    def initialisations(self, k: Tensor) -> Params:
        """theta_{k_t} for each row t of ``k`` [R] -> adapted names [R, ...]."""
        return {name: self.components[name.replace(".", "_")][k] for name in self.adapted_names()}

    def log_likelihoods(self, batch: Task, components: int | Tensor, on_query: bool) -> Tensor:
        """log p(D_t | phi_tk) [T, K] for the first ``components`` components (or those a tensor of indices [K]
        names), phi adapted on the support set."""
        tasks = len(batch)
        chosen = torch.arange(components) if isinstance(components, int) else components
        rows = chosen.repeat_interleave(tasks)
        repeated = Task.cat([batch] * len(chosen))
        phi = self.adapt_from(rows, repeated.support_x, repeated.support_y, False)
        x, y = (repeated.query_x, repeated.query_y) if on_query else (repeated.support_x, repeated.support_y)
        with torch.no_grad():
            losses = self.loss_fn(self.query_outputs_no_grad(phi, x, False), y)      # [K * T] mean losses
        scale = y.shape[1] / (2 * self.options.noise**2 if self.task_kind == "regression" else 1.0)
        return -(losses * scale).view(len(chosen), tasks).T

    def log_prior(self, components: int) -> Tensor:
        """log pi_k [K + 1]: the CRP's existing components, then a new one."""
        counts = self.counts[:components]
        return torch.log(torch.cat([counts, counts.new_tensor([self.options.concentration])])
                         / (counts.sum() + self.options.concentration))

    def responsibilities(self, batch: Task, on_query: bool = False) -> Tensor:
        """gamma_tk [T, K] over the active components (rows sum to one)."""
        active = int(self.active)
        return torch.softmax(self.log_likelihoods(batch, active, on_query) + self.log_prior(active)[:active], -1)

    def assignments(self, batch: Task) -> Tensor:
        """Each task's most likely component [T] (from its support set)."""
        return self.responsibilities(batch).argmax(-1)

    def task_start(self, support_x: Tensor, support_y: Tensor, training: bool) -> Params:
        if self._starts is not None:
            return self._starts
        return self.initialisations(self.assignments(Task(support_x, support_y, support_x, support_y)))

    def adapt_from(self, components: Tensor, support_x: Tensor, support_y: Tensor, training: bool) -> Params:
        """The inner loop of each task t from theta_{components[t]}: adapted names [T, ...]."""
        self._starts = self.initialisations(components)
        try:
            return self.adapt_tasks(support_x, support_y, training)
        finally:
            self._starts = None

    def candidate(self, task: Task, k: int) -> Params:
        """Component ``k`` specialised to one task by ``spawn_steps`` plain gradient steps on its support set."""
        loop = InnerLoop(self.options.spawn_steps, SGD(self.options.spawn_lr))
        names = self.adapted_names()
        start = self.initialisations(torch.tensor([k]))
        fast = loop.adapt(lambda params, x: self.network_forward(params, x, False, inner=True),
                          self.parameters_by_name(), names, task.support_x[None], task.support_y[None],
                          self.support_objective(), create_graph=False, start=start)
        return {name: fast[name][0].detach() for name in names}

    def grow(self, batch: Task) -> None:
        """Propose a candidate from the batch's least explained task; keep it if it is the MAP component (new-table
        prior included) of ``spawn_share`` of the batch's *other* tasks, whose data did not shape it."""
        active, tasks = int(self.active), len(batch)
        if (tasks < 2 or active >= self.options.max_components
                or float(self.counts[:active].min()) < self.options.grow_after):
            return
        log_posterior = self.log_likelihoods(batch, active, on_query=True) + self.log_prior(active)[:active]
        best = log_posterior.max(-1).values                                               # [T] MAP log-posterior
        t = int(best.argmin())
        candidate = self.candidate(batch[t], int(log_posterior[t].argmax()))
        with torch.no_grad():
            for name, value in candidate.items():
                self.components[name.replace(".", "_")][active] = value
        others = [s for s in range(tasks) if s != t]
        held_out = Task.cat([batch[s : s + 1] for s in others])
        new = (self.log_likelihoods(held_out, torch.tensor([active]), on_query=True)[:, 0]
               + self.log_prior(active)[active])
        if int((new > best[others]).sum()) >= max(1, math.ceil(self.options.spawn_share * len(others))):
            self.counts[active] = 1.0  # the CRP's new table: the task that opened it
            self.active += 1

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """Grow, E-step (no gradient), then the responsibility-weighted MAML meta-gradient of every component."""
        self.check_batch(batch)
        with torch.enable_grad():
            self.grow(batch)
        active, tasks = int(self.active), len(batch)
        gamma = self.responsibilities(batch, on_query=True).detach()                  # [T, K]
        rows = torch.arange(active).repeat_interleave(tasks)
        repeated = Task.cat([batch] * active)
        phi = self.adapt_from(rows, repeated.support_x, repeated.support_y, True)
        outputs = self.query_outputs(phi, repeated.query_x, True)
        losses = self.loss_fn(outputs, repeated.query_y).view(active, tasks).T       # [T, K]
        (gamma * losses).sum().div(tasks).backward()
        self.counts[:active] += gamma.sum(0)
        chosen = gamma.argmax(-1)
        best = outputs.detach().view(active, tasks, *outputs.shape[1:])[chosen, torch.arange(tasks)]
        metrics = self.metrics(best, batch.query_y)
        return {**metrics, "components": self.active.detach().float(),
                "entropy": -(gamma * gamma.clamp_min(1e-12).log()).sum(-1).mean() / math.log(max(active, 2))}
