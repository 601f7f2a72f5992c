"""R2-D2 (Bertinetto et al. 2019): a differentiable closed-form ridge-regression head per task.

Each task regresses one-hot targets on its support embeddings (plus a constant feature for the
bias) in the Woodbury form (an [S, S] solve), and the query logits are scale * x W. The ridge
penalty lambda and the scale are meta-learned with the backbone (the paper's scalar output bias
is left out: a bias shared by all classes changes neither the softmax nor the prediction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.metric.base import BackboneOptions, EpisodicMetricLearner
from metalab.algorithms.metric.components.heads import ridge_head
from metalab.algorithms.registry import register
from metalab.nn.backbones import build_backbone
from metalab.nn.execution import SpeedOptions


@dataclass
class R2D2Options(BackboneOptions):
    #: initial ridge penalty lambda (learned, kept positive through its logarithm).
    ridge_lambda: float = 1.0
    #: initial logit scale (learned).
    scale: float = 1.0
    #: append a constant 1 to the embeddings so that the ridge regression has a bias.
    bias_feature: bool = True


@register("r2d2")
class R2D2(EpisodicMetricLearner):
    options: R2D2Options

    def __init__(self, options: R2D2Options, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.ridge_lambda <= 0:
            raise ValueError(f"learner.ridge_lambda must be > 0, got {options.ridge_lambda}")
        self.backbone = build_backbone(options.backbone, input_shape, options.hidden)
        self.log_lambda = nn.Parameter(torch.tensor(math.log(options.ridge_lambda)))
        self.scale = nn.Parameter(torch.tensor(float(options.scale)))

    def features(self, embeddings: Tensor) -> Tensor:
        if not self.options.bias_feature:
            return embeddings
        return torch.cat([embeddings, torch.ones_like(embeddings[..., :1])], -1)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        targets = F.one_hot(support_y, ways).to(support.dtype)
        weights = ridge_head(self.features(support), targets, self.log_lambda.exp())  # [T, D(+1), W]
        return self.scale * (self.features(query) @ weights)
