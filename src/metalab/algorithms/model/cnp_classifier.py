"""Conditional neural process for few-shot classification (Garnelo et al. 2018a, Omniglot experiment).

The encoder h maps each labelled support example to a representation; the aggregator averages
them per class (r_k = mean_{i: y_i = k} h(e_i)), a commutative operation, so the prediction is
invariant to the order of the support set; the decoder g scores a query against each class
representation: logit_k(x) = g([e(x), r_k]). A softmax over classes gives the predictive distribution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metalab.algorithms.model.base import EmbeddingClassifier, EncoderOptions
from metalab.algorithms.registry import register
from metalab.nn.backbones import MLP
from metalab.nn.class_pooling import class_means
from metalab.nn.execution import SpeedOptions


@dataclass
class CNPClassifierOptions(EncoderOptions):
    representation_size: int = 128
    decoder_size: int = 128


@register("cnp-classifier")
class CNPClassifier(EmbeddingClassifier):
    options: CNPClassifierOptions

    def __init__(self, options: CNPClassifierOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        self.h = MLP(self.embedding_size, [options.representation_size], options.representation_size)
        self.g = MLP(self.embedding_size + options.representation_size, [options.decoder_size, options.decoder_size], 1)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        representations = class_means(self.h(support), support_y, ways)  # [T, W, R]
        queries = query.unsqueeze(2).expand(-1, -1, ways, -1)  # [T, Q, W, D]
        classes = representations.unsqueeze(1).expand(-1, query.shape[1], -1, -1)  # [T, Q, W, R]
        return self.g(torch.cat([queries, classes], dim=-1)).squeeze(-1)
