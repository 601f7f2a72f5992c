"""The one dispatch point between the learners and the speed backend: how T tasks' computations run.

A gradient learner asks an :class:`Execution` for four things: a forward pass of T tasks with their own
weights, the slices of a meta-batch its inner loop runs together, the meta-backward of the query loss
through the adaptation, and (for a second-order inner loop) an unroll that holds one step's graph at a
time. ``speed.engine: reference`` answers each in plain PyTorch (:mod:`metalab.nn.reference`, the whole
meta-batch at once, one backward); ``accel`` (the default) answers with :mod:`metalab.accel`. The
answers are the same up to float rounding; tests hold the two engines to each other in float64.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from metalab.accel import folded
from metalab.accel.checkpointed_unroll import checkpointed_inner_loop
from metalab.accel.options import SpeedOptions
from metalab.accel.precision import autocast
from metalab.accel.slicing import auto_task_chunk, chunks
from metalab.accel.two_stage_backward import backward_through_adaptation
from metalab.data.task import Task
from metalab.nn import reference
from metalab.nn.batch_norm import Record
from metalab.nn.inner_loop import Unroll

__all__ = ["Execution", "SpeedOptions"]

#: (parameters with the slice's adapted leaves, start, stop) -> (query loss of tasks start:stop, their outputs)
QueryLoss = Callable[[dict[str, Tensor], int, int], tuple[Tensor, Tensor]]


class Execution:
    """How a learner's T-task computations run (``speed`` options); see the module docstring."""

    def __init__(self, speed: SpeedOptions | None = None) -> None:
        self.speed = speed or SpeedOptions()

    @property
    def accelerated(self) -> bool:
        return self.speed.engine == "accel"

    def forward(self, module: nn.Module, params: Mapping[str, Tensor], x: Tensor, per_task: Iterable[str] = (), *,
                statistics: str = "batch", record: Record | None = None, inner: bool = False,
                differentiated_twice: bool = False) -> Tensor:
        """:func:`metalab.nn.reference.task_forward`: outputs [T, N, ...] of ``module`` on x [T, N, ...].

        Hints for the backend (they never change the result): ``inner``, a pass of the inner loop (small
        support sets); ``differentiated_twice``, its gradients are differentiated again (second order).
        """
        speed = self.speed
        with autocast(x.device, speed.precision):
            if self.accelerated and folded.supports(module):
                channels_last = speed.channels_last
                if inner and speed.inner_channels_last is not None:
                    channels_last = speed.inner_channels_last
                settings = folded.ForwardSettings(
                    statistics=statistics, record=record,
                    checkpoint=speed.checkpoint and not inner and torch.is_grad_enabled(),
                    channels_last=channels_last, precision=speed.precision, fold_conv_norm=speed.fold_conv_norm,
                    native_kernels=speed.native_kernels, once_differentiable=not differentiated_twice,
                    winograd=speed.winograd)
                out = folded.task_forward(module, params, x, settings)
            else:
                out = reference.task_forward(module, params, x, per_task, statistics, record)
        return out.to(x.dtype) if speed.precision == "bf16" else out

    def task_slices(self, batch: Task, held_steps: int = 0, sequential: bool = False) -> Iterator[Task]:
        """Slices of ``batch`` whose inner loops run together.

        ``held_steps``: inner steps whose graph a slice keeps for the meta-backward (second-order meta-training;
        0 otherwise). ``sequential``: the algorithm hands something from task to task (Reptile's carried Adam
        moments): one task at a time, whatever the engine.
        """
        if sequential:
            return chunks(batch, 1)
        if not self.accelerated:
            return iter([batch])
        size = self.speed.task_chunk
        if size is None:
            if held_steps and self.speed.checkpoint_inner_loop:
                held_steps = 1  # one step's graph at a time
            size = auto_task_chunk(batch.support_x, held_steps)
        return chunks(batch, size)

    def graph_slices(self, tasks: int) -> list[tuple[int, int]]:
        """(start, stop) of the tasks of one inner-loop slice whose twice-differentiated graph is built together.

        For the algorithms that keep no graph across inner steps but differentiate one support gradient again
        (iMAML's Hessian-vector products, WarpGrad's warped step): the speed backend builds that graph task by
        task, so that a slice's peak memory is one task's graph however many tasks the slice's inner loop
        groups; the reference engine builds it for all T tasks at once.
        """
        size = 1 if self.accelerated else max(1, tasks)
        return [(start, min(start + size, tasks)) for start in range(0, tasks, size)]

    def query_slices(self, tasks: int) -> list[tuple[int, int]]:
        """(start, stop) of the tasks whose queries run together in evaluation."""
        size = self.speed.query_chunk if self.accelerated else tasks
        return [(start, min(start + size, tasks)) for start in range(0, tasks, size)]

    def backward_through_adaptation(self, fast: Mapping[str, Tensor], adapted: Iterable[str], query_loss: QueryLoss,
                                    tasks: int) -> Tensor:
        """Back-propagate the query loss of T tasks at their adapted parameters ``fast`` to the meta-parameters.

        Returns the detached query outputs [T, Q, ...]. Reference: one loss, one ``backward``; accel: two stages
        (:func:`metalab.accel.two_stage_backward.backward_through_adaptation`).
        """
        if self.accelerated:
            return backward_through_adaptation(fast, adapted, query_loss, tasks, self.speed.query_chunk)
        loss, outputs = query_loss(dict(fast), 0, tasks)
        loss.backward()
        return outputs.detach()

    @property
    def unroll(self) -> Unroll | None:
        """The checkpointed second-order unroll when ``speed.checkpoint_inner_loop`` asks for it, else None."""
        return checkpointed_inner_loop if self.accelerated and self.speed.checkpoint_inner_loop else None
