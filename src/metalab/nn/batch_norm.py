"""BatchNorm semantics of the gradient-based learners: which statistics normalise, and running estimates.

``bn_mode`` (a learner option, never a speed knob):

* ``transductive``: every forward normalises with the statistics of the set it is given (support with
  support statistics, queries with query statistics), in training and evaluation (the MAML paper).
* ``running``: meta-training normalises with batch statistics and updates running estimates from the
  queries at the adapted weights; evaluation normalises support and queries with the running
  estimates, so no prediction depends on another query.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

BN_MODES = ("transductive", "running")

#: recorded BatchNorm statistics: layer prefix ("body.blocks.0.1.") -> (mean [C], unbiased variance [C])
Record = dict[str, tuple[Tensor, Tensor]]


def statistics_for(bn_mode: str, training: bool) -> str:
    """"batch" or "running": what a forward normalises with in meta-training or evaluation."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
    return "running" if (bn_mode == "running" and not training) else "batch"


def merge_records(records: list[tuple[Record, int]]) -> Record:
    """Task-weighted mean of the statistics recorded by several parts of a meta-batch.

    ``records``: (record, number of tasks it averages) pairs.
    """
    total = sum(count for record, count in records if record)
    merged: Record = {}
    for record, count in records:
        for name, (mean, var) in record.items():
            weight = count / total
            if name in merged:
                merged[name] = (merged[name][0] + weight * mean, merged[name][1] + weight * var)
            else:
                merged[name] = (weight * mean, weight * var)
    return merged


@torch.no_grad()
def update_running_statistics(module: nn.Module, record: Mapping[str, tuple[Tensor, Tensor]]) -> None:
    """Move the running estimates of ``module``'s BatchNorm layers toward recorded batch statistics."""
    for name, layer in module.named_modules():
        prefix = f"{name}." if name else ""
        if prefix not in record or not isinstance(layer, nn.modules.batchnorm._BatchNorm):
            continue
        if layer.running_mean is None or layer.running_var is None or layer.num_batches_tracked is None:
            continue  # track_running_stats=False: none of the three
        mean, var = record[prefix]
        momentum = layer.momentum if layer.momentum is not None else 1.0 / float(layer.num_batches_tracked + 1)
        layer.running_mean.lerp_(mean.to(layer.running_mean.dtype), momentum)
        layer.running_var.lerp_(var.to(layer.running_var.dtype), momentum)
        layer.num_batches_tracked += 1
