"""An episode as a sequence: (input, label) steps for the support set, then the query.

Used by the sequence learners (MANN, SNAIL, the recurrent black-box learner). Each query becomes
the final step of its own sequence that shares the support prefix, so queries never see each
other (or their own labels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: seed of the fixed support order used in evaluation: same episodes -> same sequences -> same scores.
EVAL_ORDER_SEED = 0


def shuffle_support(features: Tensor, labels: Tensor, training: bool) -> tuple[Tensor, Tensor]:
    """Shuffle each task's support steps: features [T, S, D], labels [T, S] -> same shapes.

    Episodes arrive ordered class by class; a sequence model would learn that order. Training draws
    a fresh order per task from the global (seeded) RNG; evaluation applies one fixed seeded
    permutation of the S positions to every task, so a task's prediction does not depend on the
    batch it is evaluated in (``predict`` and ``adapt`` agree).
    """
    if training:
        order = torch.rand(labels.shape).argsort(dim=1)
    else:
        permutation = torch.randperm(labels.shape[1], generator=torch.Generator().manual_seed(EVAL_ORDER_SEED))
        order = permutation.expand(labels.shape)
    order = order.to(labels.device)
    return features.gather(1, order.unsqueeze(-1).expand_as(features)), labels.gather(1, order)


def one_hot(labels: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """Labels [...] -> one-hot [..., size]."""
    return F.one_hot(labels, size).to(dtype)


def labelled_steps(features: Tensor, labels: Tensor, label_size: int) -> Tensor:
    """Support steps carrying their own label: [T, S, D] + [T, S] -> [T, S, D + label_size]."""
    return torch.cat([features, one_hot(labels, label_size, features.dtype)], dim=-1)


def unlabelled_steps(features: Tensor, label_size: int) -> Tensor:
    """Query steps with an all-zero label slot: [T, Q, D] -> [T, Q, D + label_size]."""
    return torch.cat([features, features.new_zeros(*features.shape[:-1], label_size)], dim=-1)


def offset_label_steps(features: Tensor, labels: Tensor, label_size: int) -> Tensor:
    """Time-offset labels (Santoro et al. 2016): step t carries input t and the label of step t-1.

    features [B, L, D], labels [B, L] -> [B, L, D + label_size]; the first step's label slot is zero.
    """
    previous = one_hot(labels, label_size, features.dtype)
    previous = torch.cat([torch.zeros_like(previous[:, :1]), previous[:, :-1]], dim=1)
    return torch.cat([features, previous], dim=-1)


def query_sequences(support_steps: Tensor, query_steps: Tensor) -> Tensor:
    """One sequence per query: its task's support steps, then the query last.

    support_steps [T, S, F], query_steps [T, Q, F] -> [T * Q, S + 1, F] (task-major: row t * Q + q).
    """
    tasks, support_size, size = support_steps.shape
    queries = query_steps.shape[1]
    prefix = support_steps.unsqueeze(1).expand(tasks, queries, support_size, size)
    return torch.cat([prefix, query_steps.unsqueeze(2)], dim=2).flatten(0, 1)
