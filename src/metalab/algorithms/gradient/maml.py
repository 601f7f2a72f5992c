"""MAML (Finn et al. 2017): meta-learn an initialisation from which a few gradient steps solve a task.

Algorithm 2 of the paper, for a meta-batch of T tasks with support and query sets:

    phi_t = theta - alpha * grad L_support_t(phi_t)        k times from phi_t = theta   (the inner loop, eq. 1)
    theta <- theta - beta * grad_theta (1/T) sum_t L_query_t(phi_t)                      (the meta-update)

``meta_step`` leaves grad_theta in ``.grad``; the trainer's optimiser takes the step (Adam in the paper's
code). The meta-gradient flows through the inner steps (second order) unless ``first_order`` (FOMAML,
section 5.2, also :mod:`metalab.algorithms.gradient.fomaml`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from metalab.algorithms.gradient.base import GradientLearner, GradientOptions
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.batch_norm import Record


@register("maml")
class MAML(GradientLearner):
    """Second-order MAML by default (``first_order: true`` gives first-order MAML)."""

    options: GradientOptions

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """grad_theta of the mean query loss at the adapted parameters, into ``.grad``; query metrics."""
        self.check_batch(batch)
        records: list[tuple[Record, int]] = []
        outputs = []
        for tasks in self.execution.task_slices(batch, self.held_steps()):
            # per-step BatchNorm: step k's support statistics update set k's running estimates
            support_record: Record | None = {} if self.per_step_norms else None
            with self.recording_support(support_record):
                phi = self.adapt_tasks(tasks.support_x, tasks.support_y, training=True)  # the inner loop
            if support_record is not None:
                records.append((support_record, len(tasks)))

            def query_loss(params: dict[str, Tensor], start: int, stop: int, tasks: Task = tasks):
                """(1/T) sum_t L_query_t(phi_t) over tasks start:stop of the slice, and their outputs."""
                record: Record | None = {} if self.options.bn_mode != "transductive" else None
                out = self.query_outputs(params, tasks.query_x[start:stop], training=True, record=record)
                if record is not None:
                    records.append((record, stop - start))
                return self.loss_fn(out, tasks.query_y[start:stop]).sum() / len(batch), out

            # the meta-backward: d query loss / d theta, through phi_t(theta)
            outputs.append(self.execution.backward_through_adaptation(phi, self.adapted_names(), query_loss,
                                                                      len(tasks)))
        self.update_batch_norm(records)
        return self.metrics(torch.cat(outputs), batch.query_y)
