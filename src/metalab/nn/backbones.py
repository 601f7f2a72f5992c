"""Backbones: the Conv-4 of the few-shot literature and an MLP for regression or features."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int, pool: bool = True) -> nn.Sequential:
    """conv3x3 (padding 1) -> BatchNorm -> ReLU -> maxpool 2."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """4 x [conv3x3 hidden, BatchNorm, ReLU, maxpool2], flattened.

    Input [B, C, H, W] -> embedding [B, hidden * (H // 16) * (W // 16)]
    (64 for 28x28 Omniglot, 1600 for 84x84 mini-ImageNet with hidden=64).
    ``flatten=False`` keeps the feature map [B, hidden, H // 16, W // 16] (Relation Network).
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, depth: int = 4, flatten: bool = True) -> None:
        super().__init__()
        channels = [in_channels] + [hidden] * depth
        self.blocks = nn.Sequential(*(conv_block(channels[i], channels[i + 1]) for i in range(depth)))
        self.flatten = flatten

    def forward(self, images: Tensor) -> Tensor:
        features = self.blocks(images)
        return features.flatten(1) if self.flatten else features


class MLP(nn.Module):
    """Fully connected network: [B, in_features] -> [B, out_features], ReLU between layers."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int | None = None) -> None:
        super().__init__()
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        if out_features is not None:
            layers.append(nn.Linear(sizes[-1], out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs)


def build_backbone(name: str, input_shape: Sequence[int], hidden: int = 64) -> nn.Module:
    """A backbone by name for inputs of ``input_shape`` (C, H, W) without the batch dimension."""
    if name == "conv4":
        return Conv4(in_channels=input_shape[0], hidden=hidden)
    raise ValueError(f"unknown backbone {name!r}; known: conv4")


@torch.no_grad()
def embedding_dim(backbone: nn.Module, input_shape: Sequence[int]) -> int:
    """Size of the flattened output of ``backbone`` for one input of ``input_shape``."""
    was_training = backbone.training
    backbone.eval()
    size = backbone(torch.zeros(1, *input_shape)).flatten(1).shape[1]
    backbone.train(was_training)
    return int(size)
