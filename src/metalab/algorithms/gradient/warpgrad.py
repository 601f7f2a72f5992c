"""WarpGrad (Flennerhag et al. 2020, "Meta-Learning with Warped Gradient Descent"): meta-learned warp layers
interleaved with the task layers precondition the inner steps; Warp-Leap meta-learns the initialisation too.

The network alternates task layers (adapted per task) and warp layers omega (never adapted, shared by every task
and step): on Conv-4, a warp convolution + BatchNorm after each task block, as in the paper's Omniglot model; on
the MLP, a warp Linear after each hidden layer. Back-propagating through the warp layers makes the task gradient
a preconditioned one, grad_theta L(theta; omega) (section 3). The warp parameters minimise the paper's trajectory
objective (eq. 9, Algorithm 2): over points theta_k of the tasks' inner trajectories, held fixed (stop-gradient),

    J(omega) = (1/T) sum_t (1/|P|) sum_{k in P} L_query_t(theta_t,k - alpha grad L_support_t(theta_t,k; omega); omega),

one warped step from each point, scored on the task's queries (the authors' code, flennerhag/warpgrad, scores it
on a second batch of the task's data). Each point's term is differentiated as the trajectory passes it and its
graph freed, so memory does not grow with the inner steps (on the speed backend the graph is built task by task:
:meth:`~metalab.nn.execution.Execution.graph_slices`). P: every step 0..K-1, or ``warp_points`` of them drawn
at random per meta-iteration. The initialisation follows Leap (``init_objective: leap``, Warp-Leap, the paper's
Omniglot method; the authors' "simplified Leap", without the loss term):
grad theta_0 = (1/T) sum_t sum_k (theta_t,k - theta_t,k+1) / ||theta_t,k - theta_t,k+1||; or Reptile's
theta_0 - mean_t theta_t,K (``reptile``, Warp-Reptile).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalab.algorithms.gradient.base import (
    GradientLearner,
    GradientOptions,
    check_inner_batches,
    inner_minibatches,
)
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.backbones import conv_block, embedding_dim
from metalab.nn.batch_norm import Record
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import Params, select_support, task_gradient_norms

INIT_OBJECTIVES = ("leap", "reptile")


@dataclass
class WarpGradOptions(GradientOptions):
    inner_steps: int = 5
    inner_lr: float = 0.1
    #: trajectory points per task and meta-iteration in the warp objective, drawn from steps 0..K-1 (0 = all).
    warp_points: int = 0
    #: the initialisation's meta-objective: "leap" (Warp-Leap) or "reptile" (Warp-Reptile).
    init_objective: str = "leap"
    #: support examples per inner step in meta-training / evaluation (0 = the whole support set): the
    #: multi-alphabet protocol's batches of 20 drawings; the warp objective's step from theta_k uses step k's batch.
    inner_batch: int = 0
    inner_batch_test: int = 0


def warped_network(options: WarpGradOptions, input_shape: tuple[int, ...]) -> nn.Sequential:
    """body (task blocks ``task<i>`` interleaved with warp layers ``warp<i>``) + head (a task layer)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if options.backbone == "conv4":
        if len(input_shape) != 3:
            raise ValueError(f"backbone conv4 needs image inputs (C, H, W), got input shape {input_shape}")
        channels = [input_shape[0]] + [options.hidden] * 4
        for i in range(4):
            layers[f"task{i}"] = conv_block(channels[i], channels[i + 1])
            layers[f"warp{i}"] = nn.Sequential(nn.Conv2d(options.hidden, options.hidden, 3, padding=1),
                                               nn.BatchNorm2d(options.hidden))
        layers["flatten"] = nn.Flatten()
    elif options.backbone == "mlp":
        sizes = [int(torch.Size(input_shape).numel()), *options.mlp_hidden]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers[f"task{i}"] = nn.Sequential(nn.Linear(a, b), nn.ReLU())
            layers[f"warp{i}"] = nn.Sequential(nn.Linear(b, b))
    else:
        raise ValueError(f"WarpGrad's learner.backbone must be 'conv4' or 'mlp', got {options.backbone!r}")
    body = nn.Sequential(layers)
    return nn.Sequential(OrderedDict(body=body, head=nn.Linear(embedding_dim(body, input_shape), options.ways)))


@register("warpgrad")
class WarpGrad(GradientLearner):
    """Warp-Leap by default (``init_objective: reptile`` gives Warp-Reptile); the inner loop adapts task layers only."""

    options: WarpGradOptions

    def __init__(self, options: WarpGradOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        if options.init_objective not in INIT_OBJECTIVES:
            raise ValueError(f"learner.init_objective must be one of {', '.join(INIT_OBJECTIVES)}, "
                             f"got {options.init_objective!r}")
        if options.warp_points < 0:
            raise ValueError(f"learner.warp_points must be >= 0 (0 = every inner step), got {options.warp_points}")
        check_inner_batches(options.inner_batch, options.inner_batch_test)
        if options.first_order:
            raise ValueError("WarpGrad never back-propagates through the inner loop, so learner.first_order does "
                             "not apply; remove it")
        super().__init__(options, input_shape, speed)
        self.network = warped_network(options, input_shape)

    def adapted_names(self) -> list[str]:
        return [name for name, _ in self.network.named_parameters() if not name.startswith("body.warp")]

    def warp_names(self) -> list[str]:
        return [name for name, _ in self.network.named_parameters() if name.startswith("body.warp")]

    def held_steps(self) -> int:
        return 1  # the graph of one warped step at a time, whatever the inner steps

    def support_indices(self, batch: Task, training: bool) -> list[Tensor] | None:
        """Per inner step, each task's minibatch of support positions [T, B] (``inner_batch``), or None (all)."""
        size = self.options.inner_batch if training else self.options.inner_batch_test
        return inner_minibatches(batch, size, self.inner_steps(training))

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool,
                    indices: list[Tensor] | None = None) -> Params:
        """theta_t,K [T, ...]: ``inner_steps`` warped SGD steps of the task layers (detached)."""
        return self.adapt_first_order(support_x, support_y, training, indices)

    def warp_objective(self, point: Params, tasks: Task, index: Tensor | None = None) -> Tensor:
        """L_query_t(theta_k - alpha grad L_support_t(theta_k; omega); omega) [T] at a fixed point theta_k [T, ...];
        ``index`` [T, B]: the support positions of step k's minibatch (None: the whole support set)."""
        adapted = self.adapted_names()
        leaves = {name: point[name].detach().requires_grad_() for name in adapted}
        params = {**self.parameters_by_name(), **leaves}  # the warp parameters stay live: omega's graph

        def forward(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
            return self.network_forward(params, x, training=True, inner=True, differentiated_twice=True)

        loop = self.inner_loop(training=True)
        support_x, support_y = select_support(tasks.support_x, tasks.support_y, index)
        grads = loop.gradients(forward, params, support_x, support_y, adapted, self.support_objective(),
                               create_graph=True)
        stepped, _ = loop.rule.step(leaves, dict(zip(adapted, grads)), None, 0, loop.rule.tensors())
        return self.loss_fn(self.query_outputs({**params, **stepped}, tasks.query_x, training=True), tasks.query_y)

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """Warp gradients (the trajectory objective) and the initialisation's (Leap or Reptile) into ``.grad``."""
        self.check_batch(batch)
        params, adapted, warp = self.parameters_by_name(), self.adapted_names(), self.warp_names()
        steps = self.inner_steps(training=True)
        count = self.options.warp_points
        points = set(range(steps)) if not count or count >= steps else set(torch.randperm(steps)[:count].tolist())
        gradients = {name: torch.zeros_like(p) for name, p in params.items()}
        records: list[tuple[Record, int]] | None = [] if self.options.bn_mode == "running" else None
        outputs, first = [], 0
        batches = self.support_indices(batch, training=True)  # drawn before slicing: slices never change them
        for tasks in self.execution.task_slices(batch, self.held_steps()):
            previous: list[Params] = []
            indices = None if batches is None else [index[first:first + len(tasks)] for index in batches]
            first += len(tasks)

            def visit(k: int, fast: Params, tasks: Task = tasks, previous: list[Params] = previous,
                      indices: list[Tensor] | None = indices) -> None:
                fast = {name: fast[name].detach() for name in adapted}
                for start, stop in self.execution.graph_slices(len(tasks)) if k in points else []:
                    point = {name: value[start:stop] for name, value in fast.items()}  # the warped step's graph
                    index = None if indices is None else indices[k][start:stop]
                    with torch.enable_grad():
                        loss = self.warp_objective(point, tasks[start:stop], index).sum() / (len(batch) * len(points))
                        for name, grad in zip(warp, torch.autograd.grad(loss, [params[n] for n in warp])):
                            gradients[name] += grad
                if previous and self.options.init_objective == "leap":
                    segment = [previous[0][name] - fast[name] for name in adapted]  # theta_k - theta_k+1 [T, ...]
                    length = task_gradient_norms(segment).clamp_min(1e-9)  # ||theta_k - theta_k+1|| [T]
                    for name, piece in zip(adapted, segment):
                        gradients[name] += (piece / length.view(-1, *[1] * (piece.dim() - 1))).sum(0) / len(batch)
                previous[:] = [fast]

            phi = self.adapt_first_order(tasks.support_x, tasks.support_y, training=True, indices=indices, visit=visit)
            if self.options.init_objective == "reptile":
                for name in adapted:
                    gradients[name] += (params[name].detach() - phi[name]).sum(0) / len(batch)
            outputs.append(self.query_outputs_no_grad(phi, tasks.query_x, training=True, records=records))
        self.update_batch_norm(records or [])
        for name, p in params.items():
            p.grad = gradients[name] if p.grad is None else p.grad + gradients[name]
        return self.metrics(torch.cat(outputs), batch.query_y)
