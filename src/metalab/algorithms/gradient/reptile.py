"""Reptile (Nichol et al. 2018): move the initialisation toward the weights each task adapts to.

Each task takes k steps of SGD or Adam (from the initial weights, first order, no meta-graph), and the
meta-update is theta <- theta + epsilon * mean_t(phi_t - theta). ``meta_step`` writes the
pseudo-gradient theta - mean_t(phi_t) into ``.grad``, so the trainer's SGD with lr = epsilon (the
"meta step size") performs exactly that update. All tasks of a meta-batch adapt at once ("batched"
Reptile); ``task.meta_batch: 1`` is the serial version.

The inner Adam's moments are carried from task to task (``inner_adam_state: carried``, the default), as
in the authors' code (openai/supervised-reptile), which resets only the network's weights between tasks and
keeps Adam's moments and step count for the whole run, evaluation included (evaluation starts from them and
leaves them unchanged). A fresh Adam per task takes +-lr sign steps for every weight in its first step, and on
Omniglot 5w1s it reached 76.43 % against 88.01 % for carried moments after 14 minutes of training
(benchmarks/gradient/RESULTS.md). Tasks adapted together in one slice (``learner.task_chunk`` > 1) start from
the same moments and hand on their average; a slice of one task (the Omniglot recipes) reproduces the
authors' sequential order exactly. The moments are buffers of the learner: checkpoints keep them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import List, Mapping

import torch
from torch import Tensor, nn

from metalab.algorithms.gradient.common import GradientLearner, GradientOptions, chunks
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.functional import AdamState, inner_loop, merge_records, update_running_statistics

INNER_ADAM_STATES = ("carried", "per_task")


@dataclass
class ReptileOptions(GradientOptions):
    first_order: bool = True
    inner_steps: int = 5
    inner_steps_test: int = 50
    inner_lr: float = 0.001
    #: "adam" (the paper's Omniglot setting, beta1 = 0) or "sgd".
    inner_optimizer: str = "adam"
    adam_betas: List[float] = field(default_factory=lambda: [0.0, 0.999])
    #: the inner Adam's moments: "carried" from task to task and into evaluation (the authors' code), or
    #: "per_task" (zero at the start of every task's adaptation).
    inner_adam_state: str = "carried"
    #: support examples per inner step in meta-training / evaluation (0 = the whole support set).
    inner_batch: int = 0
    inner_batch_test: int = 0


@register("reptile")
class Reptile(GradientLearner):
    Options = ReptileOptions

    def __init__(self, options: ReptileOptions, input_shape: tuple[int, ...]) -> None:
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
        for name in ("inner_batch", "inner_batch_test"):
            if getattr(options, name) < 0:
                raise ValueError(f"learner.{name} must be >= 0 (support examples per inner step; 0 = all), "
                                 f"got {getattr(options, name)}")
        super().__init__(options, input_shape)
        betas = tuple(float(b) for b in options.adam_betas)
        self.loop = replace(self.loop, optimizer=options.inner_optimizer, betas=betas, minibatch=options.inner_batch)
        self.test_loop = replace(self.loop, minibatch=options.inner_batch_test)
        carried = options.inner_optimizer == "adam" and options.inner_adam_state == "carried"
        self.adam_moments = CarriedAdamMoments(self.parameters_by_name()) if carried else None

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool) -> dict[str, Tensor]:
        """Adapted weights [T, ...] of T tasks; meta-training hands the carried Adam moments on, evaluation does not."""
        loop = self.loop if training else self.test_loop
        steps = self.inner_steps(training)
        start = {name: p.detach().requires_grad_() for name, p in self.parameters_by_name().items()}
        adam_state = self.adam_moments.state() if self.adam_moments is not None else None
        with torch.enable_grad():
            fast = inner_loop(self.network, start, self.adapted_names(), support_x, support_y, self.loss_fn,
                              loop, steps=steps, training=training, create_graph=False, adam_state=adam_state)
        if training and adam_state is not None:
            self.adam_moments.store(adam_state)
        return {name: value.detach() for name, value in fast.items()}

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """Pseudo-gradient theta - mean_t(phi_t) into ``.grad``; metrics from the queries at phi_t."""
        self.check_batch(batch)
        params = self.parameters_by_name()
        total = len(batch)
        moved = {name: torch.zeros_like(p) for name, p in params.items()}
        outputs = []
        records: list[tuple[dict, int]] | None = [] if self.options.bn_mode == "running" else None
        for chunk in chunks(batch, self.task_chunk(batch, training=True)):
            fast = self.adapt_tasks(chunk.support_x, chunk.support_y, training=True)
            for name in self.adapted_names():
                moved[name] += (params[name].detach() - fast[name]).sum(0) / total
            with torch.no_grad():
                outputs.append(self.query_outputs_in_chunks(fast, chunk.query_x, training=True, records=records))
        if records:
            update_running_statistics(self.network, merge_records(records))
        for name, p in params.items():
            p.grad = moved[name] if p.grad is None else p.grad + moved[name]
        return self.metrics(torch.cat(outputs), batch.query_y)


class CarriedAdamMoments(nn.Module):
    """The inner Adam's state carried across tasks, as buffers (saved in checkpoints, averaged across ranks).

    Buffers ``first-<name>`` and ``second-<name>`` have the shape of the network's parameter ``name`` (no task
    dimension); ``steps`` counts the inner Adam steps taken so far (the bias correction goes on from it).
    All zero, they are a fresh Adam.
    """

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
        """Keep what a slice of T tasks ended with: each moment [T, ...] averaged over the tasks."""
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
