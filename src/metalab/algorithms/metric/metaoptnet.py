"""MetaOptNet (Lee et al. 2019): a differentiable multi-class (Crammer-Singer) SVM head per task.

For each task the SVM dual is solved on the support embeddings (linear kernel) and the query
logits are scale * sum_i A[i, k] <x_i, query>; the meta-gradient flows through the solution's KKT
conditions into the backbone (see :func:`metalab.algorithms.metric.components.heads.svm_head`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.metric.base import BackboneOptions, EpisodicMetricLearner
from metalab.algorithms.metric.components.heads import svm_head
from metalab.algorithms.registry import register
from metalab.nn.backbones import build_backbone
from metalab.nn.execution import SpeedOptions


@dataclass
class MetaOptNetOptions(BackboneOptions):
    #: SVM slack penalty C.
    svm_c: float = 0.1
    #: identity added to the dual's block kernel (MetaOptNet's 1.0, for a well-posed QP).
    svm_eps: float = 1.0
    #: iterations and tolerance of the dual solver.
    svm_iterations: int = 2000
    svm_tolerance: float = 1e-6
    #: initial value of the learned logit scale.
    scale: float = 1.0
    #: label smoothing of the cross-entropy (the paper uses 0.1).
    label_smoothing: float = 0.0


@register("metaoptnet")
class MetaOptNet(EpisodicMetricLearner):
    options: MetaOptNetOptions

    def __init__(self, options: MetaOptNetOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.svm_c <= 0 or options.svm_eps < 0:
            raise ValueError(f"learner.svm_c must be > 0 and learner.svm_eps >= 0, "
                             f"got {options.svm_c}, {options.svm_eps}")
        self.backbone = build_backbone(options.backbone, input_shape, options.hidden)
        self.scale = nn.Parameter(torch.tensor(float(options.scale)))

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        o = self.options
        kernel = support @ support.transpose(1, 2)  # [T, S, S]
        alpha = svm_head(kernel, support_y, ways, c=o.svm_c, eps=o.svm_eps, max_iter=o.svm_iterations,
                         tol=o.svm_tolerance)
        return self.scale * ((query @ support.transpose(1, 2)) @ alpha)  # [T, Q, W]

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), query_y.flatten(), label_smoothing=self.options.label_smoothing)
