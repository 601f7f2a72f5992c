"""Hypernetwork learner: a permutation-invariant set encoder turns the support set into the
weights of the task's classifier head, which then classifies the queries.

    e_i = f(x_i)                              image embeddings (Conv-4)
    c_k = mean_{i: y_i = k} phi(e_i)          class codes (DeepSets: invariant to support order)
    g   = mean_k c_k                          the whole task's code
    [w_k, b_k] = rho([c_k, g])                generated head weights of class k, [D] and [1]
    logits(x) = scale * e(x) . w_k + b_k

The head is generated, never trained by gradient steps on the support set; only f, phi and rho
are meta-trained. Any number of ways and unequal shots per class work.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalab.algorithms.model.base import EmbeddingClassifier, EncoderOptions
from metalab.algorithms.registry import register
from metalab.nn.backbones import MLP
from metalab.nn.class_pooling import class_means
from metalab.nn.execution import SpeedOptions


@dataclass
class HyperNetOptions(EncoderOptions):
    #: width of the set encoder phi and the weight generator rho
    set_size: int = 256
    #: learned temperature's initial value (logits = scale * e . w + b)
    initial_scale: float = 1.0


class HeadGenerator(nn.Module):
    """Set encoder + weight generator: support embeddings [T, S, D], labels [T, S] -> weights [T, W, D], bias [T, W]."""

    def __init__(self, features: int, set_size: int) -> None:
        super().__init__()
        self.phi = MLP(features, [set_size], set_size)
        self.rho = MLP(2 * set_size, [set_size], features + 1)

    def forward(self, support: Tensor, labels: Tensor, ways: int) -> tuple[Tensor, Tensor]:
        class_codes = class_means(self.phi(support), labels, ways)  # [T, W, H]
        task_code = class_codes.mean(1, keepdim=True).expand_as(class_codes)
        generated = self.rho(torch.cat([class_codes, task_code], dim=-1))  # [T, W, D + 1]
        return generated[..., :-1], generated[..., -1]


@register("hypernet")
class HyperNet(EmbeddingClassifier):
    options: HyperNetOptions

    def __init__(self, options: HyperNetOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        self.generator = HeadGenerator(self.embedding_size, options.set_size)
        self.log_scale = nn.Parameter(torch.tensor(float(options.initial_scale)).log())

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        weights, bias = self.generator(support, support_y, ways)
        return self.log_scale.exp() * query @ weights.transpose(1, 2) + bias.unsqueeze(1)
