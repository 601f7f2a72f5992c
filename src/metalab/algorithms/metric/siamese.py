"""Siamese network (Koch et al. 2015): a twin network trained to verify same/different pairs.

Both items of a pair go through the same embedding h; p(same) = sigmoid(sum_j w_j |h1_j - h2_j| + b)
(a weighted L1 distance). Pairs are drawn, balanced, within each training task of the meta-batch,
whose images come only from training classes (see :mod:`metalab.algorithms.metric.components.pairs`); every
image of the batch is embedded in one pass and pairs index into those embeddings. A query is
classified by its most similar support item: the logit of class k is the largest pair score
between the query and the support items of class k.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.metric.base import BackboneOptions, EpisodicMetricLearner
from metalab.algorithms.metric.components.pairs import random_affine, sample_pairs
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.backbones import build_backbone, embedding_dim
from metalab.nn.execution import SpeedOptions


@dataclass
class SiameseOptions(BackboneOptions):
    #: size of Koch's sigmoid fully connected feature layer after the backbone (0 = none).
    features: int = 0
    #: same/different pairs drawn per training task (half of each).
    pairs_per_task: int = 256
    #: apply Koch et al.'s random affine distortions to training images.
    distortions: bool = False


@register("siamese")
class SiameseNetwork(EpisodicMetricLearner):
    options: SiameseOptions

    def __init__(self, options: SiameseOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        backbone = build_backbone(options.backbone, input_shape, options.hidden)
        dim = embedding_dim(backbone, input_shape)
        if options.features > 0:
            backbone = nn.Sequential(backbone, nn.Linear(dim, options.features), nn.Sigmoid())
            dim = options.features
        self.backbone = backbone
        self.distance = nn.Linear(dim, 1)  # weighted L1 distance + bias -> logit of "same"

    def pair_logits(self, first: Tensor, second: Tensor) -> Tensor:
        """Logit of p(same) for embeddings broadcastable to [..., D] -> [...]."""
        return self.distance((first - second).abs()).squeeze(-1)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        scores = self.pair_logits(query.unsqueeze(2), support.unsqueeze(1))  # [T, Q, S]
        of_class = F.one_hot(support_y, ways).bool().unsqueeze(1)  # [T, 1, S, W]
        masked = scores.unsqueeze(-1).masked_fill(~of_class, float("-inf"))
        return masked.amax(2)  # [T, Q, W]

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        tasks, support_size = batch.support_y.shape
        images = torch.cat([batch.support_x, batch.query_x], 1)  # [T, N, C, H, W]
        labels = torch.cat([batch.support_y, batch.query_y], 1)  # [T, N]
        flat = images.flatten(0, 1)
        if self.options.distortions:
            flat = random_affine(flat)
        embeddings = self.backbone(flat).unflatten(0, images.shape[:2])  # [T, N, D]
        first, second, same = sample_pairs(labels, self.options.pairs_per_task)
        dim = embeddings.shape[-1]
        pick = lambda positions: embeddings.gather(1, positions.unsqueeze(-1).expand(-1, -1, dim))  # noqa: E731
        logits = self.pair_logits(pick(first), pick(second))
        loss = F.binary_cross_entropy_with_logits(logits, same.to(logits.dtype))
        loss.backward()
        with torch.no_grad():  # one-shot classification of the batch's queries, from the same embeddings
            episode_logits = self.head(embeddings[:, :support_size], batch.support_y, embeddings[:, support_size:],
                                       int(batch.support_y.max()) + 1)
        return {
            "loss": loss.detach(),
            "accuracy": (episode_logits.argmax(-1) == batch.query_y).float().mean(),
            "pair_accuracy": ((logits.detach() > 0) == same).float().mean(),
        }
