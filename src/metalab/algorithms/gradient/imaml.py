"""iMAML (Rajeswaran et al. 2019): the meta-gradient of a proximal inner problem by implicit differentiation.

Each task solves its support loss plus a proximal term toward the initialisation theta (eq. 4),

    phi_t = argmin_phi  L_support_t(phi) + (lambda / 2) ||phi - theta||^2       (k gradient steps from theta),

by the shared inner loop, first order (no graph is kept). At an exact minimiser, d phi_t / d theta =
(I + H_t / lambda)^-1 with H_t the Hessian of L_support_t at phi_t (eq. 6), so the meta-gradient of the query
loss is (eq. 7, Algorithm 2)

    grad_theta L_query_t(phi_t) = (I + H_t / lambda)^-1 g_t,     g_t = grad_phi L_query_t(phi_t),

solved for each task by conjugate gradients on Hessian-vector products (:mod:`metalab.nn.implicit`, ``cg_steps``
iterations, Algorithm 2 step 6). Memory is that of one support gradient's graph, whatever the inner steps (on the
speed backend one task's: :meth:`~metalab.nn.execution.Execution.graph_slices`).
``cg_damping`` d solves ((1 + d) I + H / lambda) v = g instead (the authors' code, aravindr93/imaml_dev, adds
1 to the identity and 10 to lambda in its matrix; the paper's equation is d = 0). ``cg_steps: 0`` takes v = g
(the first-order approximation (I + H / lambda)^-1 ~ I).

``inner_solver: hessian-free`` is the paper's second variant: each inner step solves (H + lambda I) d = -grad G
(G the proximal objective) by ``inner_cg_steps`` CG iterations and takes the largest step 2^-i d (i < 10) that
decreases G by Armijo's rule (a task with none stays put).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from metalab.algorithms.gradient.base import GradientLearner, GradientOptions
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.batch_norm import Record
from metalab.nn.execution import SpeedOptions
from metalab.nn.implicit import conjugate_gradient, hessian_operator, per_task, task_dot
from metalab.nn.inner_loop import Objective, Params

INNER_SOLVERS = ("gd", "hessian-free")
#: halvings of the step size a Hessian-free inner step tries before it gives up (the task stays put)
LINE_SEARCH_HALVINGS = 10


@dataclass
class IMAMLOptions(GradientOptions):
    #: lambda, the strength of the proximal pull toward theta (the paper's Omniglot runs: 2.0).
    prox_lambda: float = 2.0
    #: conjugate-gradient iterations per task for (I + H / lambda)^-1 g (the paper: 5); 0 = first order (v = g).
    cg_steps: int = 5
    #: a task's conjugate gradient stops once its squared residual norm ||b - A v||^2 is at most this.
    cg_tolerance: float = 1e-10
    #: d in ((1 + d) I + H / lambda) v = g (0: the paper's eq. 7).
    cg_damping: float = 0.0
    #: the inner solver of the proximal problem: "gd" (``inner_steps`` gradient steps at ``inner_lr``) or
    #: "hessian-free" (``inner_steps`` Newton steps, each direction by ``inner_cg_steps`` CG iterations, the step
    #: size by a backtracking line search; ``inner_lr`` unused).
    inner_solver: str = "gd"
    #: CG iterations for each Hessian-free inner direction (the paper: 5).
    inner_cg_steps: int = 5


def check_imaml_options(options: IMAMLOptions) -> None:
    if not options.prox_lambda > 0:
        raise ValueError(f"learner.prox_lambda must be > 0 (the proximal strength lambda; the paper uses 2.0), "
                         f"got {options.prox_lambda}")
    if options.cg_steps < 0:
        raise ValueError(f"learner.cg_steps must be >= 0 (0 = first-order meta-gradient), got {options.cg_steps}")
    if not options.cg_tolerance >= 0:
        raise ValueError(f"learner.cg_tolerance must be >= 0, got {options.cg_tolerance}")
    if not options.cg_damping >= 0:
        raise ValueError(f"learner.cg_damping must be >= 0 (0 = the paper's system), got {options.cg_damping}")
    if options.inner_solver not in INNER_SOLVERS:
        raise ValueError(f"learner.inner_solver must be one of {', '.join(INNER_SOLVERS)}, "
                         f"got {options.inner_solver!r}")
    if options.inner_cg_steps < 1:
        raise ValueError(f"learner.inner_cg_steps must be >= 1, got {options.inner_cg_steps}")
    if options.first_order:
        raise ValueError("iMAML never back-propagates through the inner loop, so learner.first_order does not "
                         "apply; remove it (learner.cg_steps=0 gives the first-order meta-gradient)")


@register("imaml")
class IMAML(GradientLearner):
    """Implicit MAML; the inner solver is gradient descent ("iMAML, GD") or Newton-CG ("iMAML, Hessian-Free")."""

    options: IMAMLOptions

    def __init__(self, options: IMAMLOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        check_imaml_options(options)
        super().__init__(options, input_shape, speed)

    def support_objective(self) -> Objective:
        loss_fn, lam = self.loss_fn, self.options.prox_lambda
        theta = {name: value.detach() for name, value in self.parameters_by_name().items()}

        def objective(params: Mapping[str, Tensor], outputs: Tensor, targets: Tensor) -> Tensor:
            """L_support_t(phi_t) + (lambda / 2) ||phi_t - theta||^2 for each task [T]."""
            distance = sum((params[n] - theta[n]).pow(2).flatten(1).sum(1) for n in self.adapted_names())
            return loss_fn(outputs, targets) + 0.5 * lam * distance

        return objective

    def held_steps(self) -> int:
        return 1  # the graph of one support gradient (the Hessian-vector products), whatever the inner steps

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool,
                    indices: list[Tensor] | None = None) -> Params:
        """phi_t [T, ...] of the proximal problem by ``inner_steps`` steps of the inner solver from theta (detached)."""
        if self.options.inner_solver == "gd":
            return self.adapt_first_order(support_x, support_y, training, indices)
        return self.adapt_hessian_free(support_x, support_y, training)

    def adapt_hessian_free(self, support_x: Tensor, support_y: Tensor, training: bool) -> Params:
        """phi_t [T, ...] by ``inner_steps`` Newton-CG steps with a backtracking line search (detached)."""
        theta = {name: value.detach() for name, value in self.parameters_by_name().items()}
        adapted, objective = self.adapted_names(), self.support_objective()
        phi = {name: theta[name].expand(len(support_x), *theta[name].shape).clone() for name in adapted}

        def proximal(params: Params) -> Tensor:
            """G_t(phi_t) = L_support_t(phi_t) + (lambda / 2) ||phi_t - theta||^2 for each task [T]."""
            full = {**theta, **params}
            return objective(full, self.network_forward(full, support_x, training, inner=True,
                                                        differentiated_twice=True), support_y)

        for _ in range(self.inner_steps(training)):
            with torch.enable_grad():
                leaves = {name: value.requires_grad_() for name, value in phi.items()}
                values = proximal(leaves)
                grads = dict(zip(adapted, torch.autograd.grad(values.sum(), list(leaves.values()))))
                hessian = hessian_operator(lambda params: proximal(params).sum(), phi)  # H + lambda I
                direction = conjugate_gradient(hessian, {name: -grad for name, grad in grads.items()},
                                               self.options.inner_cg_steps, self.options.cg_tolerance)
            slope, values = task_dot(grads, direction), values.detach()  # directional derivative [T]
            size, accepted = torch.ones_like(values), torch.zeros_like(values, dtype=torch.bool)
            with torch.no_grad():
                for _ in range(LINE_SEARCH_HALVINGS):
                    trial = proximal({name: phi[name] + per_task(size, phi[name]) * direction[name] for name in phi})
                    accepted = accepted | (trial <= values + 1e-4 * size * slope)
                    if bool(accepted.all()):
                        break
                    size = torch.where(accepted, size, size / 2)
            size = torch.where(accepted, size, 0)
            phi = {name: (phi[name] + per_task(size, phi[name]) * direction[name]).detach() for name in phi}
        return {**theta, **phi}

    def implicit_gradient(self, phi: Params, tasks: Task, query_gradient: Params) -> Params:
        """v_t = ((1 + d) I + H_t / lambda)^-1 g_t for each task [T, ...], H_t the support loss's Hessian at phi_t."""
        lam, damping, shared = self.options.prox_lambda, self.options.cg_damping, self.parameters_by_name()
        if self.options.cg_steps == 0:
            return query_gradient

        def support_loss(params: Params) -> Tensor:
            outputs = self.network_forward({**shared, **params}, tasks.support_x, training=True, inner=True,
                                           differentiated_twice=True)
            return self.loss_fn(outputs, tasks.support_y).sum()

        hessian = hessian_operator(support_loss, {name: phi[name] for name in query_gradient})

        def matvec(vector: Params) -> Params:
            products = hessian(vector)
            return {name: (1 + damping) * vector[name] + products[name] / lam for name in vector}

        return conjugate_gradient(matvec, query_gradient, self.options.cg_steps, self.options.cg_tolerance)

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """(1/T) sum_t of the implicit meta-gradients into ``.grad``; query metrics at phi_t."""
        self.check_batch(batch)
        params, adapted = self.parameters_by_name(), self.adapted_names()
        meta_gradient = {name: torch.zeros_like(params[name]) for name in adapted}
        records: list[tuple[Record, int]] = []
        outputs = []
        for tasks in self.execution.task_slices(batch, self.held_steps()):
            phi = self.adapt_tasks(tasks.support_x, tasks.support_y, training=True)
            leaves = {name: phi[name].requires_grad_() for name in adapted}
            record: Record | None = {} if self.options.bn_mode == "running" else None
            with torch.enable_grad():
                out = self.query_outputs({**params, **leaves}, tasks.query_x, training=True, record=record)
                # g_t = grad_phi (1/T) L_query_t(phi_t): the meta-batch mean, as MAML's meta-step
                loss = self.loss_fn(out, tasks.query_y).sum() / len(batch)
                query_gradient = dict(zip(adapted, torch.autograd.grad(loss, list(leaves.values()))))
                if record is not None:
                    records.append((record, len(tasks)))
                for start, stop in self.execution.graph_slices(len(tasks)):  # the HVPs' graph, task by task
                    part = {name: value[start:stop] for name, value in query_gradient.items()}
                    point = {name: phi[name][start:stop] for name in part}
                    for name, value in self.implicit_gradient(point, tasks[start:stop], part).items():
                        meta_gradient[name] += value.sum(0)
            outputs.append(out.detach())
        self.update_batch_norm(records)
        for name in adapted:
            p = params[name]
            p.grad = meta_gradient[name] if p.grad is None else p.grad + meta_gradient[name]
        return self.metrics(torch.cat(outputs), batch.query_y)
