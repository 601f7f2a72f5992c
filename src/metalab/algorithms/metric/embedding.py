"""Embed the support and query images of a batch of tasks in one forward pass of a backbone."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from metalab.data.task import Task


def embed_batch(backbone: nn.Module, support_x: Tensor, query_x: Tensor) -> tuple[Tensor, Tensor]:
    """One backbone pass over every image of T tasks.

    support_x [T, S, C, H, W], query_x [T, Q, C, H, W] -> support [T, S, *F], query [T, Q, *F],
    where F is the backbone's output shape for one image (a vector or a feature map).
    """
    tasks, support_size = support_x.shape[:2]
    query_size = query_x.shape[1]
    features = backbone(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
    support = features[: tasks * support_size].unflatten(0, (tasks, support_size))
    query = features[tasks * support_size :].unflatten(0, (tasks, query_size))
    return support, query


def embed_task_batch(backbone: nn.Module, batch: Task) -> tuple[Tensor, Tensor]:
    """:func:`embed_batch` for a batched :class:`Task`."""
    return embed_batch(backbone, batch.support_x, batch.query_x)


def ways_of(support_y: Tensor) -> int:
    """Number of classes in support labels (0..ways-1)."""
    return int(support_y.max()) + 1


def check_support_labels(support_y: Tensor) -> int:
    """Ways of one task's support labels [S]; every label 0..ways-1 must have an example."""
    ways = ways_of(support_y)
    missing = set(range(ways)) - set(support_y.tolist())
    if missing:
        raise ValueError(f"support labels must cover 0..{ways - 1}; labels {sorted(missing)} have no examples")
    return ways
