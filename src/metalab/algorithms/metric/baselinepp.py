"""Baseline++ (Chen et al. 2019): the Baseline pre-trained with a cosine classifier.

The linear layer of the Baseline is replaced by logits_k = s * cos(f(x), w_k) (:class:`CosineClassifier`,
s = ``learner.cosine_scale``): the class vectors are weight-normalised, which reduces the
intra-class variation of the embeddings. Everything else (the global-class pre-training, the
logistic regression fitted on frozen support embeddings at test time) is the Baseline's
(:mod:`metalab.algorithms.metric.baseline`).
"""
from __future__ import annotations

from dataclasses import dataclass

from metalab.algorithms.metric.baseline import Baseline, BaselineOptions, CosineClassifier
from metalab.algorithms.registry import register

__all__ = ["BaselinePP", "BaselinePPOptions", "CosineClassifier"]


@dataclass
class BaselinePPOptions(BaselineOptions):
    classifier: str = "cosine"


@register("baselinepp")
class BaselinePP(Baseline):
    """Baseline++: :class:`Baseline` with the cosine classifier (``learner.classifier: cosine``) by default."""

    options: BaselinePPOptions
