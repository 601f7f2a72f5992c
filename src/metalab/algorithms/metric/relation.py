"""Relation Network (Sung et al. 2018): a learned relation module scores (query, class) pairs.

The embedding module (4 conv blocks, max-pooling in the first two only) maps an image to a
feature map; a class's map is the *sum* of its support maps (K-shot). Each query map is
concatenated with each class map along channels and the relation module (2 conv blocks + 2 fully
connected layers) gives a sigmoid relation score in [0, 1], trained by MSE against one-hot targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.base import LearnerOptions
from metalab.algorithms.metric.base import EpisodicMetricLearner
from metalab.algorithms.registry import register
from metalab.nn.backbones import conv_block
from metalab.nn.class_pooling import class_sums
from metalab.nn.execution import SpeedOptions


@dataclass
class RelationOptions(LearnerOptions):
    #: channels of every conv layer (embedding and relation module).
    hidden: int = 64
    #: width of the relation module's hidden fully connected layer.
    relation_hidden: int = 8


class EmbeddingModule(nn.Module):
    """4 x [conv3x3, BN, ReLU], max-pool after the first two: [B, C, H, W] -> [B, hidden, H/4, W/4]."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            conv_block(in_channels, hidden), conv_block(hidden, hidden),
            conv_block(hidden, hidden, pool=False), conv_block(hidden, hidden, pool=False),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.blocks(images)


class RelationModule(nn.Module):
    """2 x [conv3x3, BN, ReLU, maxpool] on [B, 2*hidden, h, w] -> FC-ReLU -> FC -> sigmoid score [B]."""

    def __init__(self, hidden: int, fc_hidden: int, feature_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(conv_block(2 * hidden, hidden), conv_block(hidden, hidden))
        with torch.no_grad():
            flat = self.blocks.eval()(torch.zeros(1, 2 * hidden, *feature_shape[1:])).numel()
        self.blocks.train()
        self.fc = nn.Sequential(nn.Linear(flat, fc_hidden), nn.ReLU(), nn.Linear(fc_hidden, 1))

    def forward(self, pairs: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(self.blocks(pairs).flatten(1))).squeeze(-1)


@register("relation")
class RelationNetwork(EpisodicMetricLearner):
    """Logits are the relation scores (in [0, 1]); the argmax is the predicted class."""

    options: RelationOptions

    def __init__(self, options: RelationOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if len(input_shape) != 3 or min(input_shape[1:]) < 16:
            raise ValueError(f"the Relation Network needs images of at least 16x16, got input shape {input_shape}")
        self.backbone = EmbeddingModule(input_shape[0], options.hidden)
        feature_shape = (options.hidden, input_shape[1] // 4, input_shape[2] // 4)
        self.relation = RelationModule(options.hidden, options.relation_hidden, feature_shape)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        classes = class_sums(support, support_y, ways)  # [T, W, C, h, w]
        tasks, queries = query.shape[:2]
        pairs = torch.cat([
            classes.unsqueeze(1).expand(-1, queries, -1, -1, -1, -1),
            query.unsqueeze(2).expand(-1, -1, ways, -1, -1, -1),
        ], dim=3)  # [T, Q, W, 2C, h, w]
        return self.relation(pairs.flatten(0, 2)).view(tasks, queries, ways)

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        return F.mse_loss(logits, F.one_hot(query_y, logits.shape[-1]).to(logits.dtype))
