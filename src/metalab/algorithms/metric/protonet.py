"""Prototypical Networks (Snell et al. 2017): classify queries by distance to class-mean embeddings."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from metalab.algorithms.metric.base import BackboneOptions, EpisodicMetricLearner
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.backbones import build_backbone
from metalab.nn.class_pooling import class_means
from metalab.nn.execution import SpeedOptions


@dataclass
class ProtoNetOptions(BackboneOptions):
    #: "euclidean" (squared Euclidean, the paper's choice) or "cosine".
    distance: str = "euclidean"
    #: logits = cosine_scale * cos(query, prototype) when distance is "cosine".
    cosine_scale: float = 10.0
    #: BatchNorm statistics per task (one backbone pass per task) instead of over the whole
    #: meta-batch: slower, but the model no longer depends on how a meta-batch is split across
    #: distributed ranks (see README, distributed training).
    per_task_statistics: bool = False


def prototype_logits(query_embeddings: Tensor, protos: Tensor, distance: str, cosine_scale: float) -> Tensor:
    """Queries [T, Q, D] against prototypes [T, W, D] -> logits [T, Q, W]."""
    if distance == "euclidean":
        return -squared_distances(query_embeddings, protos)
    if distance == "cosine":
        return cosine_scale * F.normalize(query_embeddings, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)
    raise ValueError(f"unknown distance {distance!r}; use 'euclidean' or 'cosine'")


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances: a [T, Q, D], b [T, W, D] -> [T, Q, W]."""
    return (a.unsqueeze(2) - b.unsqueeze(1)).pow(2).sum(-1)


@register("protonet")
class ProtoNet(EpisodicMetricLearner):
    """Embeds support and query images of all tasks in one backbone pass; logits = -d(query, prototype)."""

    options: ProtoNetOptions

    def __init__(self, options: ProtoNetOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.distance not in ("euclidean", "cosine"):
            raise ValueError(f"learner.distance must be 'euclidean' or 'cosine', got {options.distance!r}")
        self.backbone = build_backbone(options.backbone, input_shape, options.hidden)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """Support [T, S, D], labels [T, S], query [T, Q, D] -> logits [T, Q, ways]."""
        protos = class_means(support, support_y, ways)  # the prototypes [T, W, D]
        return prototype_logits(query, protos, self.options.distance, self.options.cosine_scale)

    def logits(self, batch: Task) -> Tensor:
        """Query logits [T, Q, ways] for a batch of tasks, with one forward pass of the backbone
        (one per task with ``per_task_statistics`` in training mode)."""
        if self.options.per_task_statistics and self.training and len(batch) > 1:
            return torch.cat([self.logits(batch[i : i + 1]) for i in range(len(batch))])
        return super().logits(batch)
