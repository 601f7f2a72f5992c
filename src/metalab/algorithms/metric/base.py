"""What the metric-based learners share: the episodic skeleton (embed once, score queries against
the support), the backbone options most of them have (:class:`BackboneOptions`) and the functions
on episodes they use (:func:`embed_task_batch`, :func:`ways_of`, :func:`check_support_labels`,
from :mod:`metalab.algorithms.base`).

A subclass of :class:`EpisodicMetricLearner` builds ``self.backbone`` and implements
:meth:`EpisodicMetricLearner.head`, which turns support/query embeddings of T tasks into query
logits; the base class provides the one-pass embedding, the cross-entropy meta-step, batched
``predict`` and ``adapt`` for one task with any shots per class.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.base import (
    LearnerOptions,
    MetaLearner,
    check_support_labels,
    classification_metrics,
    embed_task_batch,
    ways_of,
)
from metalab.data.task import Task

__all__ = ["BackboneOptions", "EpisodicMetricLearner", "check_support_labels", "embed_task_batch", "ways_of"]


@dataclass
class BackboneOptions(LearnerOptions):
    """Options of the learners that embed images with a backbone of ``metalab.nn.backbones`` by name."""

    #: the embedding network, e.g. "conv4" (see ``metalab.nn.backbones.build_backbone``).
    backbone: str = "conv4"
    #: its width (channels of each Conv-4 block).
    hidden: int = 64


class EpisodicMetricLearner(MetaLearner):
    """Base class; subclasses set ``self.backbone`` and implement :meth:`head`."""

    backbone: nn.Module

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """Query logits [T, Q, ways] from support [T, S, *F], labels [T, S] and query [T, Q, *F]."""
        raise NotImplementedError

    def logits(self, batch: Task) -> Tensor:
        """Query logits [T, Q, ways] with one backbone pass over all images of the batch."""
        support, query = embed_task_batch(self.backbone, batch)
        return self.head(support, batch.support_y, query, ways_of(batch.support_y))

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """Meta-training loss of logits [T, Q, W] against labels [T, Q] (cross-entropy)."""
        return F.cross_entropy(logits.flatten(0, 1), query_y.flatten())

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        logits = self.logits(batch)
        loss = self.loss(logits, batch.query_y)
        loss.backward()
        return classification_metrics(logits, batch.query_y, loss)

    @torch.no_grad()
    def predict(self, batch: Task) -> Tensor:
        return self.logits(batch)

    @torch.no_grad()
    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = check_support_labels(support_y)
        support = self.backbone(support_x).unsqueeze(0)
        labels = support_y.unsqueeze(0)

        @torch.no_grad()
        def classify(query_x: Tensor) -> Tensor:
            return self.head(support, labels, self.backbone(query_x).unsqueeze(0), ways)[0]

        return classify
