"""BatchNorm semantics of the gradient-based learners: which statistics normalise, and running estimates.

``bn_mode`` (a learner option, never a speed knob):

* ``transductive``: every forward normalises with the statistics of the set it is given (support with
  support statistics, queries with query statistics), in training and evaluation (the MAML paper).
* ``running``: meta-training normalises with batch statistics and updates running estimates from the
  queries at the adapted weights; evaluation normalises support and queries with the running
  estimates, so no prediction depends on another query.
* ``per_step``: MAML++'s per-step BatchNorm (Antoniou et al. 2019, "How to train your MAML", section 4:
  BNWB and BNRS). Every BatchNorm layer becomes a :class:`PerStepBatchNorm` with a weight, a bias and
  running statistics for each inner step: inner step k's support forward uses set k, the query forward
  after the K steps set K. Meta-training normalises with batch statistics and updates set k's running
  estimates from step k's support forward (set K's from the queries); evaluation normalises with the
  running estimates of each step's set, as ``running`` does, so no query's statistics reach the support
  forwards or another query's prediction.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_MODES = ("transductive", "running", "per_step")

#: recorded BatchNorm statistics: layer prefix ("body.blocks.0.1.", "body.blocks.0.1.[k]" for set k of a
#: per-step layer) -> (mean [C], unbiased variance [C])
Record = dict[str, tuple[Tensor, Tensor]]


def statistics_for(bn_mode: str, training: bool) -> str:
    """"batch" or "running": what a forward normalises with in meta-training or evaluation."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
    return "running" if (bn_mode != "transductive" and not training) else "batch"


class PerStepBatchNorm(nn.Module):
    """BatchNorm with its own weight, bias and running statistics per inner step (MAML++'s BNWB + BNRS).

    ``weight``, ``bias`` [sets, C] and the buffers ``running_mean``, ``running_var`` [sets, C] and
    ``num_batches_tracked`` [sets]; a forward uses set ``step`` (see :func:`batch_norm_step`): batch
    statistics in training mode, set ``step``'s running estimates in evaluation mode. Inputs [N, C, ...].
    """

    track_running_stats = True
    running_mean: Tensor
    running_var: Tensor
    num_batches_tracked: Tensor

    def __init__(self, num_features: int, sets: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.num_features, self.sets, self.eps, self.momentum = num_features, sets, eps, momentum
        self.weight = nn.Parameter(torch.ones(sets, num_features))
        self.bias = nn.Parameter(torch.zeros(sets, num_features))
        self.register_buffer("running_mean", torch.zeros(sets, num_features))
        self.register_buffer("running_var", torch.ones(sets, num_features))
        self.register_buffer("num_batches_tracked", torch.zeros(sets, dtype=torch.long))
        #: the set the next forward uses
        self.step = 0

    @classmethod
    def like(cls, norm: nn.modules.batchnorm._BatchNorm, sets: int) -> PerStepBatchNorm:
        """``sets`` copies of ``norm``'s weight, bias and running statistics."""
        layer = cls(norm.num_features, sets, norm.eps, norm.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(norm, name)
                if value is not None:
                    getattr(layer, name).copy_(value.expand(sets, -1))
        return layer.to(norm.weight.device if norm.weight is not None else None)

    def forward(self, x: Tensor) -> Tensor:
        if not 0 <= self.step < self.sets:
            raise ValueError(f"per-step BatchNorm has {self.sets} sets, step {self.step} asked")
        k = self.step
        mean, var = (None, None) if self.training else (self.running_mean[k], self.running_var[k])
        return F.batch_norm(x, mean, var, self.weight[k], self.bias[k], training=self.training, momentum=0.0,
                            eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, sets={self.sets}, eps={self.eps}, momentum={self.momentum}"


#: the layers whose statistics ``bn_mode`` chooses
NORMS = (nn.modules.batchnorm._BatchNorm, PerStepBatchNorm)


def use_per_step_batch_norm(module: nn.Module, sets: int) -> list[PerStepBatchNorm]:
    """Replace every BatchNorm layer of ``module`` (in place, same name) by a :class:`PerStepBatchNorm` of
    ``sets`` copies of it; returns the new layers."""
    replaced = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                layer = PerStepBatchNorm.like(child, sets)
                setattr(parent, name, layer)
                replaced.append(layer)
    return replaced


@contextmanager
def batch_norm_step(norms: Sequence[PerStepBatchNorm], step: int) -> Iterator[None]:
    """The per-step BatchNorm layers ``norms`` use set ``step`` for a while."""
    before = [norm.step for norm in norms]
    for norm in norms:
        norm.step = step
    try:
        yield
    finally:
        for norm, previous in zip(norms, before):
            norm.step = previous


def record_key(prefix: str, layer: nn.Module) -> str:
    """Where a layer's batch statistics go in a :data:`Record`: its prefix, with the set of a per-step layer."""
    return f"{prefix}[{layer.step}]" if isinstance(layer, PerStepBatchNorm) else prefix


def merge_records(records: list[tuple[Record, int]]) -> Record:
    """Task-weighted mean of the statistics recorded by several parts of a meta-batch.

    ``records``: (record, number of tasks it averages) pairs.
    """
    totals: dict[str, int] = {}  # per name: the parts of the meta-batch that recorded it
    for record, count in records:
        for name in record:
            totals[name] = totals.get(name, 0) + count
    merged: Record = {}
    for record, count in records:
        for name, (mean, var) in record.items():
            weight = count / totals[name]
            if name in merged:
                merged[name] = (merged[name][0] + weight * mean, merged[name][1] + weight * var)
            else:
                merged[name] = (weight * mean, weight * var)
    return merged


@torch.no_grad()
def update_running_statistics(module: nn.Module, record: Mapping[str, tuple[Tensor, Tensor]],
                              warmup: bool = False) -> None:
    """Move the running estimates of ``module``'s BatchNorm layers toward recorded batch statistics.

    Each set moves by its layer's momentum (as torch's BatchNorm; ``momentum=None``: the cumulative mean). With
    ``warmup`` it moves by ``max(momentum, 1 / (n + 1))`` after ``n`` earlier updates: the first 1/momentum updates
    take the cumulative mean of the statistics seen so far (the initial (0, 1) estimates drop out at the first),
    the later ones the exponential moving average."""
    for name, layer in module.named_modules():
        prefix = f"{name}." if name else ""
        for key, running_mean, running_var, tracked in _running_estimates(layer, prefix):
            if key not in record:
                continue
            mean, var = record[key]
            cumulative = 1.0 / float(tracked + 1)
            momentum = cumulative if layer.momentum is None else (
                max(layer.momentum, cumulative) if warmup else layer.momentum)
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_(var.to(running_var.dtype), momentum)
            tracked += 1


def _running_estimates(layer: nn.Module, prefix: str) -> list[tuple[str, Tensor, Tensor, Tensor]]:
    """(record key, running mean, running variance, batches tracked) of each set of running estimates of a
    layer (views of its buffers): one for a BatchNorm, one per set for a per-step one, none for other layers or
    a BatchNorm built with track_running_stats=False."""
    if isinstance(layer, PerStepBatchNorm):
        return [(f"{prefix}[{k}]", layer.running_mean[k], layer.running_var[k], layer.num_batches_tracked[k])
                for k in range(layer.sets)]
    if (isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None
            and layer.running_var is not None and layer.num_batches_tracked is not None):
        return [(prefix, layer.running_mean, layer.running_var, layer.num_batches_tracked)]
    return []
