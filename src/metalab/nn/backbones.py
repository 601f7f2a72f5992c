"""Backbones: the Conv-4 and ResNet-12 of the few-shot literature, and an MLP for regression or features."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from metalab.nn.resnet12 import DEFAULT_CHANNELS, ResNet12


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


class Conv4(nn.Sequential):
    """4 x [conv3x3 hidden, BatchNorm, ReLU, maxpool2], flattened.

    Input [B, C, H, W] -> embedding [B, hidden * (H // 16) * (W // 16)]
    (64 for 28x28 Omniglot, 1600 for 84x84 mini-ImageNet with hidden=64).
    ``flatten=False`` keeps the feature map [B, hidden, H // 16, W // 16] (Relation Network).
    A plain ``nn.Sequential`` (``blocks``, then ``flatten``), so that code running networks layer by layer
    (the speed backend) sees its structure.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, depth: int = 4, flatten: bool = True) -> None:
        channels = [in_channels] + [hidden] * depth
        layers: dict[str, nn.Module] = {"blocks": nn.Sequential(*(conv_block(channels[i], channels[i + 1])
                                                                  for i in range(depth)))}
        if flatten:
            layers["flatten"] = nn.Flatten()
        super().__init__(OrderedDict(layers))


class MLP(nn.Sequential):
    """Fully connected network: [B, in_features] -> [B, out_features], ReLU between layers.

    A plain ``nn.Sequential`` holding one ``net`` (Linear, ReLU, ...).
    """

    net: nn.Sequential

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int | None = None) -> None:
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        if out_features is not None:
            layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(OrderedDict(net=nn.Sequential(*layers)))


#: block widths of the "resnet12" that :func:`build_backbone` builds (tests set smaller ones).
RESNET12_CHANNELS: tuple[int, ...] = DEFAULT_CHANNELS


def build_backbone(name: str, input_shape: Sequence[int], hidden: int = 64) -> nn.Module:
    """A backbone by name for inputs of ``input_shape`` (C, H, W) without the batch dimension.

    "conv4": :class:`Conv4` with ``hidden`` channels. "resnet12": :class:`ResNet12` with its
    published widths (:data:`RESNET12_CHANNELS`; ``hidden`` does not apply), global average
    pooling (640 features) and no dropout or DropBlock; images of at least 16x16.
    """
    if name == "conv4":
        return Conv4(in_channels=input_shape[0], hidden=hidden)
    if name == "resnet12":
        if len(input_shape) != 3 or min(input_shape[1:]) < 16:
            raise ValueError(
                f"backbone resnet12 needs images (C, H, W) of at least 16x16 (four 2x2 max-pools), "
                f"got input shape {tuple(input_shape)}; use backbone conv4 for smaller images"
            )
        return ResNet12(in_channels=input_shape[0], channels=RESNET12_CHANNELS)
    raise ValueError(f"unknown backbone {name!r}; known: conv4, resnet12")


@torch.no_grad()
def embedding_dim(backbone: nn.Module, input_shape: Sequence[int]) -> int:
    """Size of the flattened output of ``backbone`` for one input of ``input_shape``."""
    was_training = backbone.training
    backbone.eval()
    size = backbone(torch.zeros(1, *input_shape)).flatten(1).shape[1]
    backbone.train(was_training)
    return int(size)
