"""Reptile (Nichol et al. 2018): move the initialisation toward the weights each task adapts to.

Algorithm 2 of the paper ("batched" Reptile): each task takes k steps of SGD or Adam from theta (first order,
no meta-graph) to phi_t, and the meta-update is

    theta <- theta + epsilon * (1/T) sum_t (phi_t - theta).

``meta_step`` writes the pseudo-gradient theta - mean_t(phi_t) into ``.grad``, so the trainer's SGD with
lr = epsilon (the "meta step size") performs exactly that update; ``task.meta_batch: 1`` is the serial version.

The inner Adam's moments are carried from task to task (``inner_adam_state: carried``, the default), as in the
authors' code (openai/supervised-reptile), which resets only the network's weights between tasks and keeps
Adam's moments and step count for the whole run, evaluation included (evaluation starts from them and leaves
them unchanged). Carried moments make the tasks of a meta-batch sequential: they adapt one after another,
whatever ``speed.task_chunk`` says. The moments are buffers of the learner: checkpoints keep them. A fresh
Adam per task (``per_task``) takes +-lr sign steps for every weight in its first step and trains worse
(benchmarks/gradient/RESULTS.md).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

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
from metalab.nn.batch_norm import Record
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import SGD, Adam, AdamState, Params, UpdateRule

INNER_ADAM_STATES = ("carried", "per_task")


@dataclass
class ReptileOptions(GradientOptions):
    first_order: bool = True
    inner_steps: int = 5
    #: inner steps at evaluation and prediction (the paper's 50; null = ``inner_steps``, as for the other learners)
    inner_steps_test: int | None = 50
    inner_lr: float = 0.001
    #: "adam" (the paper's Omniglot setting, beta1 = 0) or "sgd".
    inner_optimizer: str = "adam"
    adam_betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    #: the inner Adam's moments: "carried" from task to task and into evaluation (the authors' code), or
    #: "per_task" (zero at the start of every task's adaptation).
    inner_adam_state: str = "carried"
    #: support examples per inner step in meta-training / evaluation (0 = the whole support set).
    inner_batch: int = 0
    inner_batch_test: int = 0


@register("reptile")
class Reptile(GradientLearner):
    options: ReptileOptions
    #: Reptile's running estimates come from the queries (its meta_step); per-step sets are MAML++'s
    bn_modes = ("transductive", "running")

    def __init__(self, options: ReptileOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        if not options.first_order:
            raise ValueError("Reptile is first order by definition; remove learner.first_order=false")
        if options.inner_adam_state not in INNER_ADAM_STATES:
            raise ValueError(f"learner.inner_adam_state must be one of {', '.join(INNER_ADAM_STATES)}, "
                             f"got {options.inner_adam_state!r}")
        if options.inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"learner.inner_optimizer must be 'sgd' or 'adam', got {options.inner_optimizer!r}")
        betas = list(options.adam_betas)
        if len(betas) != 2 or not all(0.0 <= float(beta) < 1.0 for beta in betas):
            raise ValueError(f"learner.adam_betas must be [beta1, beta2], each in [0, 1), got {betas}")
        check_inner_batches(options.inner_batch, options.inner_batch_test)
        super().__init__(options, input_shape, speed)
        carried = options.inner_optimizer == "adam" and options.inner_adam_state == "carried"
        self.adam_moments = CarriedAdamMoments(self.parameters_by_name()) if carried else None

    def update_rule(self, training: bool) -> UpdateRule:
        if self.options.inner_optimizer == "sgd":
            return SGD(self.options.inner_lr)
        start = self.adam_moments.state() if self.adam_moments is not None else None
        beta1, beta2 = (float(b) for b in self.options.adam_betas)  # two: checked in __init__
        return Adam(self.options.inner_lr, (beta1, beta2), start=start)

    def support_indices(self, batch: Task, training: bool) -> list[Tensor] | None:
        """Per inner step, each task's minibatch of support positions [T, B] (``inner_batch``), drawn for the
        whole meta-batch before it is sliced, so that slicing never changes which examples a task sees."""
        size = self.options.inner_batch if training else self.options.inner_batch_test
        return inner_minibatches(batch, size, self.inner_steps(training))

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool,
                    indices: list[Tensor] | None = None) -> Params:
        """Adapted weights [T, ...] of T tasks (detached); meta-training hands the carried Adam moments on."""
        start = {name: p.detach().requires_grad_() for name, p in self.parameters_by_name().items()}

        def forward(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
            return self.network_forward(params, x, training, inner=True)

        with torch.enable_grad():
            fast, state = self.inner_loop(training).adapt(
                forward, start, self.adapted_names(), support_x, support_y, self.support_objective(),
                create_graph=False, indices=indices, return_state=True)
        if training and self.adam_moments is not None:
            self.adam_moments.store(state)
        return {name: value.detach() for name, value in fast.items()}

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """Pseudo-gradient theta - mean_t(phi_t) into ``.grad``; metrics from the queries at phi_t."""
        self.check_batch(batch)
        params = self.parameters_by_name()
        moved = {name: torch.zeros_like(p) for name, p in params.items()}
        indices = self.support_indices(batch, training=True)
        records: list[tuple[Record, int]] | None = [] if self.options.bn_mode == "running" else None
        outputs, start = [], 0
        for tasks in self.execution.task_slices(batch, sequential=self.adam_moments is not None):
            stop = start + len(tasks)
            phi = self.adapt_tasks(tasks.support_x, tasks.support_y, training=True,
                                   indices=None if indices is None else [index[start:stop] for index in indices])
            for name in self.adapted_names():
                moved[name] += (params[name].detach() - phi[name]).sum(0) / len(batch)
            outputs.append(self.query_outputs_no_grad(phi, tasks.query_x, training=True, records=records))
            start = stop
        self.update_batch_norm(records or [])
        for name, p in params.items():
            p.grad = moved[name] if p.grad is None else p.grad + moved[name]
        return self.metrics(torch.cat(outputs), batch.query_y)


class CarriedAdamMoments(nn.Module):
    """The inner Adam's state carried across tasks, as buffers (saved in checkpoints, averaged across ranks).

    Buffers ``first-<name>`` and ``second-<name>`` have the shape of the network's parameter ``name`` (no task
    dimension); ``steps`` counts the inner Adam steps taken so far (the bias correction goes on from it).
    All zero, they are a fresh Adam.
    """

    steps: Tensor

    def __init__(self, parameters: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.names = list(parameters)
        for name, parameter in parameters.items():
            self.register_buffer(_buffer_name("first", name), torch.zeros_like(parameter, requires_grad=False))
            self.register_buffer(_buffer_name("second", name), torch.zeros_like(parameter, requires_grad=False))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def state(self) -> AdamState:
        """The moments to start a slice of tasks from (views of the buffers, broadcast by the inner loop)."""
        return AdamState(first={name: self.get_buffer(_buffer_name("first", name)) for name in self.names},
                         second={name: self.get_buffer(_buffer_name("second", name)) for name in self.names},
                         steps=int(self.steps))

    @torch.no_grad()
    def store(self, state: AdamState) -> None:
        """Keep what the tasks ended with (one task: the carried tasks adapt one at a time)."""
        for kind, moments in (("first", state.first), ("second", state.second)):
            for name, value in moments.items():
                self.get_buffer(_buffer_name(kind, name)).copy_(value.detach().mean(0))
        self.steps.fill_(state.steps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # checkpoints written before the moments were carried have none: they start from a fresh Adam
        absent = [key for key, _ in self.named_buffers() if prefix + key not in state_dict]
        if absent:
            warnings.warn("the checkpoint holds no inner Adam moments (written before Reptile carried them); "
                          "they start from zero", stacklevel=2)
            for key in absent:
                state_dict[prefix + key] = torch.zeros_like(self.get_buffer(key))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def _buffer_name(kind: str, parameter: str) -> str:
    # buffer names cannot hold dots; a parameter name has no "-"
    return f"{kind}-{parameter.replace('.', '-')}"
