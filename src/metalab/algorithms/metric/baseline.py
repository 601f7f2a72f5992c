"""Good-embedding baselines: Baseline (Chen et al. 2019) and RFS (Tian et al. 2020).

Meta-training is ordinary classification over all training classes: every support and query image
of a training batch is labelled with its global class (``batch.classes[t, label]``) and classified
by a linear layer (Baseline) or a cosine classifier (``learner.classifier: cosine``, the default of
Baseline++ in ``baselinepp.py``). Episodes with many ways are simply minibatches. For a test task
the backbone is frozen and a multinomial logistic regression is fitted on the (L2-normalised, as in
RFS) support embeddings, in batch over tasks.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.base import MetaLearner, classification_metrics
from metalab.algorithms.metric.base import BackboneOptions, check_support_labels, embed_task_batch, ways_of
from metalab.algorithms.metric.components.heads import logistic_regression_head
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.backbones import build_backbone, embedding_dim
from metalab.nn.execution import SpeedOptions


@dataclass
class BaselineOptions(BackboneOptions):
    #: number of training classes (global class indices of the training split), e.g. 4112 for
    #: Omniglot vinyals-train (1028 characters x 4 rotations).
    num_classes: int = 4112
    #: pre-training classifier: "linear" (Baseline) or "cosine" (Baseline++).
    classifier: str = "linear"
    #: logits = cosine_scale * cos(embedding, class weight) for the cosine classifier.
    cosine_scale: float = 10.0
    #: test-time logistic regression: inverse L2 penalty C, L-BFGS iterations, L2-normalise embeddings.
    head_c: float = 1.0
    head_iterations: int = 100
    head_normalize: bool = True


class CosineClassifier(nn.Module):
    """logits = scale * cos(x, w_k): [B, D] -> [B, classes] (weight-normalised class vectors)."""

    def __init__(self, dim: int, classes: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * dim**-0.5)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).t()


@register("baseline")
class Baseline(MetaLearner):
    options: BaselineOptions

    def __init__(self, options: BaselineOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.num_classes < 2:
            raise ValueError(f"learner.num_classes must be the number of training classes (>= 2), "
                             f"got {options.num_classes}")
        self.backbone = build_backbone(options.backbone, input_shape, options.hidden)
        dim = embedding_dim(self.backbone, input_shape)
        if options.classifier == "linear":
            self.classifier: nn.Module = nn.Linear(dim, options.num_classes)
        elif options.classifier == "cosine":
            self.classifier = CosineClassifier(dim, options.num_classes, options.cosine_scale)
        else:
            raise ValueError(f"learner.classifier must be 'linear' (Baseline) or 'cosine' (Baseline++), "
                             f"got {options.classifier!r}")

    def global_labels(self, batch: Task) -> Tensor:
        """Global class of every support and query image: [T, S + Q]."""
        if batch.classes is None:
            raise ValueError("the Baseline pre-trains on global class labels but this batch has none (batch.classes is "
                             "None); train it on a class-labelled split (omniglot, miniimagenet, folder)")
        largest = int(batch.classes.max())
        if largest >= self.options.num_classes or int(batch.classes.min()) < 0:
            raise ValueError(f"class index {largest} is out of range for "
                             f"learner.num_classes={self.options.num_classes}; "
                             f"set learner.num_classes to the number of classes of the training split")
        labels = torch.cat([batch.support_y, batch.query_y], 1)
        return batch.classes.gather(1, labels)

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        labels = self.global_labels(batch).flatten()  # per task: support then query
        images = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
        logits = self.classifier(self.backbone(images))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        return classification_metrics(logits, labels, loss)

    def _features(self, embeddings: Tensor) -> Tensor:
        return F.normalize(embeddings, dim=-1) if self.options.head_normalize else embeddings

    def _fit(self, support: Tensor, support_y: Tensor, ways: int) -> tuple[Tensor, Tensor]:
        o = self.options
        return logistic_regression_head(self._features(support), support_y, ways, c=o.head_c,
                                        max_iter=o.head_iterations)

    @torch.no_grad()
    def predict(self, batch: Task) -> Tensor:
        support, query = embed_task_batch(self.backbone, batch)
        weights, biases = self._fit(support, batch.support_y, ways_of(batch.support_y))
        return self._features(query) @ weights + biases.unsqueeze(1)

    @torch.no_grad()
    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = check_support_labels(support_y)
        weights, biases = self._fit(self.backbone(support_x).unsqueeze(0), support_y.unsqueeze(0), ways)

        @torch.no_grad()
        def classify(query_x: Tensor) -> Tensor:
            return self._features(self.backbone(query_x)) @ weights[0] + biases[0]

        return classify

