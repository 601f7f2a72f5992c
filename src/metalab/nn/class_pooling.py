"""Pooling a task's support features by class: the sums and means that ProtoNet's prototypes, the relation
network's class features and the class codes of the model-based learners are made of."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def class_sums(features: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Sum of the features of each class: features [T, S, *F], labels [T, S] (0..ways-1) -> [T, ways, *F]."""
    one_hot = F.one_hot(labels, ways).to(features.dtype)  # [T, S, W]
    sums = one_hot.transpose(1, 2) @ features.flatten(2)  # [T, W, prod(F)]
    return sums.view(features.shape[0], ways, *features.shape[2:])


def class_means(features: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Mean of the features of each class (zero for a class without examples): [T, S, *F] -> [T, ways, *F]."""
    counts = F.one_hot(labels, ways).sum(1).clamp_min(1).to(features.dtype)  # [T, W]
    return class_sums(features, labels, ways) / counts.view(*counts.shape, *([1] * (features.dim() - 2)))
