"""Reptile (Nichol et al. 2018): move the initialisation toward the weights each task adapts to.

Each task takes k steps of SGD or Adam (from the initial weights, first order, no meta-graph), and the
meta-update is theta <- theta + epsilon * mean_t(phi_t - theta). ``meta_step`` writes the
pseudo-gradient theta - mean_t(phi_t) into ``.grad``, so the trainer's SGD with lr = epsilon (the
"meta step size") performs exactly that update. All tasks of a meta-batch adapt at once ("batched"
Reptile); ``task.meta_batch: 1`` is the serial version.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List

import torch
from torch import Tensor

from metalab.algorithms.gradient.common import GradientLearner, GradientOptions, chunks
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.functional import inner_loop, merge_records, update_running_statistics


@dataclass
class ReptileOptions(GradientOptions):
    first_order: bool = True
    inner_steps: int = 5
    inner_steps_test: int = 50
    inner_lr: float = 0.001
    #: "adam" (the paper's Omniglot setting, beta1 = 0) or "sgd".
    inner_optimizer: str = "adam"
    adam_betas: List[float] = field(default_factory=lambda: [0.0, 0.999])
    #: support examples per inner step in meta-training / evaluation (0 = the whole support set).
    inner_batch: int = 0
    inner_batch_test: int = 0


@register("reptile")
class Reptile(GradientLearner):
    Options = ReptileOptions

    def __init__(self, options: ReptileOptions, input_shape: tuple[int, ...]) -> None:
        if not options.first_order:
            raise ValueError("Reptile is first order by definition; remove learner.first_order=false")
        super().__init__(options, input_shape)
        betas = tuple(float(b) for b in options.adam_betas)
        self.loop = replace(self.loop, optimizer=options.inner_optimizer, betas=betas, minibatch=options.inner_batch)
        self.test_loop = replace(self.loop, minibatch=options.inner_batch_test)

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool) -> dict[str, Tensor]:
        loop = self.loop if training else self.test_loop
        steps = self.inner_steps(training)
        start = {name: p.detach().requires_grad_() for name, p in self.parameters_by_name().items()}
        with torch.enable_grad():
            fast = inner_loop(self.network, start, self.adapted_names(), support_x, support_y, self.loss_fn,
                              loop, steps=steps, training=training, create_graph=False)
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
