"""Matching Networks (Vinyals et al. 2016): attention over the support set by a softmax of cosines.

P(y | x, S) = sum_i a(x, x_i) y_i with a(x, x_i) = softmax_i(cos(f(x), g(x_i))). With ``fce`` the
embeddings are *full context embeddings*: g runs a bidirectional LSTM over the support embeddings
(g(x_i) = g'(x_i) + forward_i + backward_i) and f refines each query embedding with an attention
LSTM that reads the support set for ``fce_steps`` steps. Without ``fce`` f = g = the backbone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.metric.base import BackboneOptions, EpisodicMetricLearner
from metalab.algorithms.registry import register
from metalab.nn.backbones import build_backbone, embedding_dim
from metalab.nn.execution import SpeedOptions


@dataclass
class MatchingOptions(BackboneOptions):
    #: full context embeddings (bidirectional LSTM g, attention LSTM f).
    fce: bool = False
    #: read steps K of the attention LSTM f.
    fce_steps: int = 5
    #: attention = softmax(cosine_scale * cos); 1 is the paper's plain softmax of cosines.
    cosine_scale: float = 1.0


def cosine_attention(query: Tensor, support: Tensor, scale: float = 1.0) -> Tensor:
    """a(x, x_i): softmax over the support of scaled cosines; query [T, Q, D], support [T, S, D] -> [T, Q, S]."""
    cosines = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)
    return (scale * cosines).softmax(-1)


def attention_log_probabilities(attention: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """log P(y = k | x, S) = log sum_{i: y_i = k} a(x, x_i); attention [T, Q, S] -> [T, Q, ways]."""
    probabilities = attention @ F.one_hot(support_y, ways).to(attention.dtype)
    return probabilities.clamp_min(1e-12).log()


class SupportContext(nn.Module):
    """g: g'(x_i) + the forward and backward states of a bidirectional LSTM over the support [T, S, D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)

    def forward(self, support: Tensor) -> Tensor:
        states, _ = self.lstm(support)
        dim = support.shape[-1]
        return support + states[..., :dim] + states[..., dim:]


class AttentionLSTM(nn.Module):
    """f: K steps of an LSTM fed f'(x) whose state reads the (context-embedded) support by attention.

    Step k: h = h_hat + f'(x); r = sum_i softmax_i(h . g_i) g_i; h_hat, c = LSTM(f'(x), (h + r, c)).
    The paper concatenates [h, r] as the state; summing them keeps the state at D (as common
    re-implementations do). Output: h_hat_K + f'(x).
    """

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"learner.fce_steps must be >= 1, got {steps}")
        self.cell = nn.LSTMCell(dim, dim)
        self.steps = steps

    def forward(self, query: Tensor, support: Tensor) -> Tensor:
        """query [T, Q, D], support g [T, S, D] -> f [T, Q, D]."""
        tasks, queries, dim = query.shape
        flat_query = query.reshape(tasks * queries, dim)
        h_hat = torch.zeros_like(flat_query)
        cell = torch.zeros_like(flat_query)
        for _ in range(self.steps):
            h = h_hat + flat_query
            read = (h.view(tasks, queries, dim) @ support.transpose(1, 2)).softmax(-1) @ support
            h_hat, cell = self.cell(flat_query, (h + read.reshape(tasks * queries, dim), cell))
        return (h_hat + flat_query).view(tasks, queries, dim)


@register("matching")
class MatchingNetwork(EpisodicMetricLearner):
    options: MatchingOptions

    def __init__(self, options: MatchingOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        self.backbone = build_backbone(options.backbone, input_shape, options.hidden)
        if options.fce:
            dim = embedding_dim(self.backbone, input_shape)
            self.support_context = SupportContext(dim)
            self.query_context = AttentionLSTM(dim, options.fce_steps)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        if self.options.fce:
            support = self.support_context(support)
            query = self.query_context(query, support)
        attention = cosine_attention(query, support, self.options.cosine_scale)
        return attention_log_probabilities(attention, support_y, ways)

    def loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        return F.nll_loss(logits.flatten(0, 1), query_y.flatten())
