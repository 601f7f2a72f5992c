"""SNAIL (Mishra et al. 2018): a Simple Neural AttentIve meta-Learner.

The episode is a sequence of (embedding, one-hot label) steps with the query last (label slot
zero). Dense blocks of causal dilated temporal convolutions (TC blocks) alternate with causal
soft-attention blocks; every block concatenates its output to its input. The Omniglot network of
the paper: attention(64, 32), TC(128), attention(256, 128), TC(128), attention(512, 256), 1x1 conv.
Each query is the last step of its own sequence (support prefix shared), so queries never see
each other. Causality means the prefix's activations do not depend on the query: they are computed
once per task, and each query adds one step on top of them (``SNAILNet.query_outputs``), not a
whole sequence of its own (Q times less work per task; at 20-way 1-shot with 5 queries per class,
100 times).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.model.base import EmbeddingClassifier, EncoderOptions
from metalab.algorithms.model.components.sequence import labelled_steps, shuffle_support, unlabelled_steps
from metalab.algorithms.registry import register
from metalab.nn.execution import SpeedOptions


class CausalConv1d(nn.Module):
    """Kernel-2 dilated convolution over time that sees only the current and earlier steps.

    [B, L, C_in] -> [B, L, C_out]; output t depends on inputs t and t - dilation.
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=2, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        padded = F.pad(x.transpose(1, 2), (self.dilation, 0))  # left padding only: causal
        return self.conv(padded).transpose(1, 2)

    def extend(self, prefix: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
        """The prefix [T, S, C_in] and, for each of Q candidate steps [T, Q, C_in] placed at position S
        after it, that step's output: -> ([T, S, C_out], [T, Q, C_out])."""
        earlier_weight, current_weight = self.conv.weight[..., 0], self.conv.weight[..., 1]  # [C_out, C_in]
        position = prefix.shape[1] - self.dilation  # the step that kernel tap 0 reads for position S
        earlier = prefix[:, position] if position >= 0 else prefix.new_zeros(prefix.shape[0], prefix.shape[2])
        shared = F.linear(earlier, earlier_weight, self.conv.bias)  # [T, C_out]
        return self.forward(prefix), F.linear(last, current_weight) + shared.unsqueeze(1)


class DenseBlock(nn.Module):
    """[B, L, C] -> [B, L, C + filters]: concat(x, tanh(conv_f(x)) * sigmoid(conv_g(x)))."""

    def __init__(self, in_channels: int, filters: int, dilation: int) -> None:
        super().__init__()
        self.features = CausalConv1d(in_channels, filters, dilation)
        self.gate = CausalConv1d(in_channels, filters, dilation)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, torch.tanh(self.features(x)) * torch.sigmoid(self.gate(x))], dim=-1)

    def extend(self, prefix: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
        """See :meth:`CausalConv1d.extend`: ([T, S, C], [T, Q, C]) -> ([T, S, C + f], [T, Q, C + f])."""
        features_prefix, features_last = self.features.extend(prefix, last)
        gate_prefix, gate_last = self.gate.extend(prefix, last)
        return (torch.cat([prefix, torch.tanh(features_prefix) * torch.sigmoid(gate_prefix)], dim=-1),
                torch.cat([last, torch.tanh(features_last) * torch.sigmoid(gate_last)], dim=-1))


class TCBlock(nn.Module):
    """Dense blocks with dilations 1, 2, 4, ... up to the sequence length: receptive field >= length.

    [B, L, C] -> [B, L, C + blocks * filters], blocks = ceil(log2(sequence_length)).
    """

    def __init__(self, in_channels: int, sequence_length: int, filters: int) -> None:
        super().__init__()
        blocks = max(1, math.ceil(math.log2(sequence_length)))
        self.blocks = nn.Sequential(*(DenseBlock(in_channels + i * filters, filters, 2**i) for i in range(blocks)))
        self.out_channels = in_channels + blocks * filters

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)

    def extend(self, prefix: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
        for block in cast("Iterable[DenseBlock]", self.blocks):  # nn.Sequential's items are typed Module
            prefix, last = block.extend(prefix, last)
        return prefix, last


class AttentionBlock(nn.Module):
    """Causal single-head soft attention: [B, L, C] -> [B, L, C + value_size]; step t attends to steps <= t."""

    def __init__(self, in_channels: int, key_size: int, value_size: int) -> None:
        super().__init__()
        self.query = nn.Linear(in_channels, key_size)
        self.key = nn.Linear(in_channels, key_size)
        self.value = nn.Linear(in_channels, value_size)
        self.out_channels = in_channels + value_size

    def forward(self, x: Tensor) -> Tensor:
        return self._attend(x, self.key(x), self.value(x))

    def _attend(self, x: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Causal attention of x [B, L, C] over its own keys [B, L, k] and values [B, L, v]."""
        length = x.shape[1]
        future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        read = F.scaled_dot_product_attention(self.query(x), keys, values, attn_mask=~future)
        return torch.cat([x, read], dim=-1)

    def extend(self, prefix: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
        """Each candidate last step [T, Q, C] attends to the prefix [T, S, C] and to itself only."""
        prefix_keys, prefix_values = self.key(prefix), self.value(prefix)  # [T, S, k|v], shared by both outputs
        query, own_key, own_value = self.query(last), self.key(last), self.value(last)  # [T, Q, k|v]
        scale = query.shape[-1] ** -0.5  # as scaled_dot_product_attention
        scores = torch.cat([query @ prefix_keys.transpose(1, 2),  # [T, Q, S]
                            (query * own_key).sum(-1, keepdim=True)], dim=-1) * scale  # [T, Q, S + 1]
        weights = scores.softmax(dim=-1)
        read = weights[..., :-1] @ prefix_values + weights[..., -1:] * own_value
        return self._attend(prefix, prefix_keys, prefix_values), torch.cat([last, read], dim=-1)


class SNAILNet(nn.Module):
    """The temporal part of SNAIL: steps [B, L, in_channels] -> outputs [B, L, out_size], causal."""

    def __init__(self, in_channels: int, out_size: int, sequence_length: int, filters: int = 128,
                 attention: tuple[tuple[int, int], ...] = ((64, 32), (256, 128), (512, 256))) -> None:
        super().__init__()
        layers: list[TCBlock | AttentionBlock] = []
        channels = in_channels
        for i, (key_size, value_size) in enumerate(attention):
            if i > 0:
                layers.append(TCBlock(channels, sequence_length, filters))
                channels = layers[-1].out_channels
            layers.append(AttentionBlock(channels, key_size, value_size))
            channels = layers[-1].out_channels
        self.layers = nn.Sequential(*layers)
        self.output = nn.Linear(channels, out_size)  # the paper's final 1x1 convolution

    def forward(self, steps: Tensor) -> Tensor:
        return self.output(self.layers(steps))

    def query_outputs(self, prefix: Tensor, queries: Tensor) -> Tensor:
        """Outputs of Q one-step continuations of a shared prefix, without running Q sequences.

        prefix [T, S, in_channels], queries [T, Q, in_channels] -> [T, Q, out_size]; equals
        ``forward(query_sequences(prefix, queries))[:, -1]`` (tests), as the network is causal.
        """
        for layer in cast("Iterable[TCBlock | AttentionBlock]", self.layers):  # as in TCBlock.extend
            prefix, queries = layer.extend(prefix, queries)
        return self.output(queries)


@dataclass
class SNAILOptions(EncoderOptions):
    #: size of the one-hot label input and of the output layer
    max_ways: int = 5
    #: longest sequence the TC blocks are sized for (ways * shots + 1); longer ones still run
    sequence_length: int = 6
    filters: int = 128


@register("snail")
class SNAIL(EmbeddingClassifier):
    options: SNAILOptions

    def __init__(self, options: SNAILOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        self.temporal = SNAILNet(self.embedding_size + options.max_ways, options.max_ways, options.sequence_length,
                                 options.filters)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        support, labels = shuffle_support(support, support_y, self.training)
        outputs = self.temporal.query_outputs(labelled_steps(support, labels, self.options.max_ways),
                                              unlabelled_steps(query, self.options.max_ways))  # [T, Q, max_ways]
        return outputs[..., :ways]
