"""The unit of meta-learning: a task with a support set and a query set."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, cast

import torch
from torch import Tensor


@dataclass
class Task:
    """A few-shot task, or a batch of tasks with a leading task dimension.

    Classification (one task):
        support_x: [ways * shots, C, H, W], support_y: [ways * shots] (int64, 0..ways-1)
        query_x:   [ways * queries, C, H, W], query_y:  [ways * queries]
    Regression (one task):
        support_x: [K, D_in], support_y: [K, D_out]; query_x: [Q, D_in], query_y: [Q, D_out]
    Batched: every field gains a leading dimension T (tasks).
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    #: optional global class index of each label ([ways], or [T, ways] batched), for learners that
    #: pre-train over all training classes (e.g. the Baseline); None for regression and user data.
    classes: Tensor | None = None
    #: optional family of the task (a scalar int64, or [T] batched) from a heterogeneous task set
    #: (:mod:`metalab.data.mixtures`); None unless the source reveals it (``data.reveal_groups``).
    group: Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Task:
        """Move all tensors to ``device``; ``dtype`` applies to the inputs (x) and float targets."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            value: Tensor | None = getattr(self, f.name)
            if value is None:
                moved[f.name] = None
            elif dtype is not None and value.is_floating_point():
                value = value.to(device=device, dtype=dtype)
            else:
                value = value.to(device)
            moved[f.name] = value
        return Task(**moved)

    def __getitem__(self, index: int | slice) -> Task:
        """The ``index``-th task of a batch (a slice: the batch of those tasks)."""
        return _from_fields(_map(getattr(self, f.name), lambda v: v[index]) for f in fields(self))

    def __len__(self) -> int:
        """Number of tasks in a batch."""
        return self.support_x.shape[0]

    @staticmethod
    def stack(tasks: list[Task]) -> Task:
        """Stack single tasks (same shapes) into a batch with a leading task dimension."""
        if not tasks:
            raise ValueError("Task.stack needs at least one task")
        return _from_fields(_join(torch.stack, [getattr(t, f.name) for t in tasks]) for f in fields(Task))

    @staticmethod
    def cat(batches: list[Task]) -> Task:
        """Concatenate batches of tasks along the task dimension."""
        return _from_fields(_join(torch.cat, [getattr(b, f.name) for b in batches]) for f in fields(Task))


def _from_fields(values: Iterable[Tensor | None]) -> Task:
    """A Task from its fields' values in order, each made from the same field of Tasks (None only for ``classes``
    and ``group``)."""
    return Task(*cast("list[Tensor]", list(values)))


def _map(value: Tensor | None, function) -> Tensor | None:
    return None if value is None else function(value)


def _join(function, values: list[Tensor | None]) -> Tensor | None:
    if any(v is None for v in values):
        return None
    return function(values)
