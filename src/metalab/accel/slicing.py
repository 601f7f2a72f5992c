"""Slices of a meta-batch: how many tasks a gradient learner's inner loop runs together."""
from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

from metalab.data.task import Task

#: support examples (of all the tasks in one slice) that an automatic inner-loop slice aims for; measured
#: on Conv-4 at 5-way 1-shot (benchmarks/speed/RESULTS.md, "task slices")
SLICE_SUPPORT = 20
#: bound of an automatic slice of a second-order inner loop, in support examples x inner steps held for the
#: meta-backward; measured at 5-way 1-shot with 5 steps (benchmarks/speed/RESULTS.md, "task slices")
SLICE_HELD_SUPPORT_STEPS = 50


def auto_task_chunk(support_x: Tensor, held_steps: int = 0) -> int:
    """Tasks per inner-loop slice for support sets [T, S, ...] when ``speed.task_chunk`` is null.

    On the CPU, tasks with small support sets adapt together in grouped kernels, ``SLICE_SUPPORT // S`` at a
    time (fewer, larger kernels); large support sets adapt task by task. ``held_steps``: inner steps whose
    graph a slice keeps for the meta-backward (a second-order meta-training step; 0 otherwise), whose memory
    grows with tasks x support x steps: such slices hold at most ``SLICE_HELD_SUPPORT_STEPS // (S * held_steps)``
    tasks. Other devices: task by task.
    """
    if support_x.device.type != "cpu":
        return 1
    support = max(1, support_x.shape[1])
    tasks = SLICE_SUPPORT // support
    if held_steps > 0:
        tasks = min(tasks, SLICE_HELD_SUPPORT_STEPS // (support * held_steps))
    return max(1, tasks)


def chunks(batch: Task, size: int) -> Iterator[Task]:
    """Consecutive slices of ``size`` tasks (all of them when size is 0)."""
    total = len(batch)
    size = total if size <= 0 else size
    for start in range(0, total, size):
        yield batch[start:start + size] if size < total else batch
