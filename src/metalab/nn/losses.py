"""Per-task losses of T tasks' outputs at once: one value per task."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

#: (outputs [T, N, ...], targets [T, N(, D)]) -> per-task losses [T]
LossFn = Callable[[Tensor, Tensor], Tensor]


def classification_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-task mean cross-entropy: logits [T, N, W], labels [T, N] -> [T]."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits -> fp32 loss
    losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return losses.view(labels.shape).mean(1)


def regression_losses(predictions: Tensor, targets: Tensor) -> Tensor:
    """Per-task mean squared error: predictions and targets [T, N, D] -> [T]."""
    return (predictions.to(targets.dtype) - targets).pow(2).flatten(1).mean(1)
