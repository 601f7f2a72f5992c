"""Backbones: the Conv-4, ResNet-12 and WRN-28-10 of the few-shot literature, any timm or torchvision model by name
(:mod:`metalab.nn.library_backbones`), and an MLP for regression or features."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from metalab.nn.library_backbones import LIBRARIES, build_library_backbone, check_settings, parse_value
from metalab.nn.resnet12 import DEFAULT_CHANNELS, ResNet12
from metalab.nn.wide_resnet import WideResNet


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
#: The image backbones :func:`build_backbone` knows, and the settings each takes in parentheses (with their types).
IMAGE_BACKBONES: dict[str, dict[str, type]] = {
    "conv4": {},
    "resnet12": {"drop_rate": float, "dropblock_size": int, "dropblock_warmup": int, "avg_pool": bool},
    "wrn28-10": {"drop_rate": float},
}


def parse_backbone(spec: str) -> tuple[str, dict[str, Any]]:
    """A backbone spec -> (name, settings): ``"resnet12"`` -> ("resnet12", {}),
    ``"resnet12(drop_rate=0.1, avg_pool=false)"`` -> ("resnet12", {"drop_rate": 0.1, "avg_pool": False}).
    A library's model, ``"LIBRARY:MODEL(settings)"`` with LIBRARY timm or torchvision, takes ``pretrained`` (bool),
    ``weights`` (a path) and its constructor's settings (bool, int, float or text):
    ``"timm:resnet18(pretrained=true)"`` -> ("timm:resnet18", {"pretrained": True}).

    Raises ``ValueError`` naming the known backbones, or the settings a backbone takes, for anything else.
    """
    name, _, rest = spec.strip().partition("(")
    name = name.strip()
    library, colon, model = name.partition(":")
    if colon and (library not in LIBRARIES or not model):
        raise ValueError(f"backbone {name!r}: a library's model is named LIBRARY:MODEL with LIBRARY one of "
                         f"{', '.join(LIBRARIES)}, e.g. 'timm:resnet18' or 'torchvision:resnet18(pretrained=true)'")
    if not colon and name not in IMAGE_BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(IMAGE_BACKBONES)} and LIBRARY:MODEL for "
                         f"{' and '.join(LIBRARIES)} models (settings in parentheses, e.g. 'resnet12(drop_rate=0.1, "
                         f"dropblock_size=5)', 'timm:resnet18(pretrained=true)')")
    if not rest:
        return name, {}
    if not rest.endswith(")"):
        raise ValueError(f"backbone {spec!r}: settings go in parentheses, e.g. 'resnet12(drop_rate=0.1)'")
    allowed = IMAGE_BACKBONES.get(name, {})  # values: bool, int or float, as ``allowed`` says
    settings: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest[:-1].split(","))):
        key, _, text = (piece.strip() for piece in item.partition("="))
        if colon:
            if not key.isidentifier() or not text:
                raise ValueError(f"backbone {spec!r}: settings are key=value pairs, e.g. 'timm:resnet18(pretrained="
                                 f"true, weights=/path/resnet18.pth)'")
            settings[key] = parse_value(text)
            continue
        if key not in allowed:
            takes = ", ".join(allowed) or "no settings"
            raise ValueError(f"backbone {name} has no setting {key!r}; it takes {takes}")
        settings[key] = _setting(name, key, text, allowed[key])
    if colon:
        check_settings(spec.strip(), settings)
    return name, settings


def _setting(name: str, key: str, text: str, kind: type) -> bool | int | float:
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        return kind(text)
    except ValueError:
        raise ValueError(f"backbone {name}: {key} must be {kind.__name__}, got {text!r}") from None


def build_backbone(name: str, input_shape: Sequence[int], hidden: int = 64) -> nn.Module:
    """A backbone by spec (see :func:`parse_backbone`) for inputs of ``input_shape`` (C, H, W) without the batch
    dimension.

    "conv4": :class:`Conv4` with ``hidden`` channels. "resnet12": :class:`ResNet12` with its published widths
    (:data:`RESNET12_CHANNELS`; ``hidden`` does not apply), by default with global average pooling (640
    features) and no dropout or DropBlock; its settings ``drop_rate``, ``dropblock_size``, ``dropblock_warmup``
    and ``avg_pool`` select MetaOptNet's (``avg_pool=false``: 640 x 5 x 5 features at 84x84) or RFS's
    regularised network; images of at least 16x16. "wrn28-10": :class:`~metalab.nn.wide_resnet.WideResNet`
    WRN-28-10 (640 features), setting ``drop_rate``. "timm:MODEL" / "torchvision:MODEL": that library's model without
    its classifier head (:func:`~metalab.nn.library_backbones.build_library_backbone`; ``hidden`` does not apply).
    """
    kind, settings = parse_backbone(name)
    library, colon, model = kind.partition(":")
    if colon:
        return build_library_backbone(name.strip(), library, model, settings, input_shape)
    if kind == "conv4":
        return Conv4(in_channels=input_shape[0], hidden=hidden)
    if kind == "resnet12":
        if len(input_shape) != 3 or min(input_shape[1:]) < 16:
            raise ValueError(
                f"backbone resnet12 needs images (C, H, W) of at least 16x16 (four 2x2 max-pools), "
                f"got input shape {tuple(input_shape)}; use backbone conv4 for smaller images"
            )
        return ResNet12(in_channels=input_shape[0], channels=RESNET12_CHANNELS, **settings)
    if len(input_shape) != 3:
        raise ValueError(f"backbone {kind} needs images (C, H, W), got input shape {tuple(input_shape)}")
    return WideResNet(in_channels=input_shape[0], depth=28, widen=10, **settings)


@torch.no_grad()
def embedding_dim(backbone: nn.Module, input_shape: Sequence[int]) -> int:
    """Size of the flattened output of ``backbone`` for one input of ``input_shape``."""
    was_training = backbone.training
    backbone.eval()
    size = backbone(torch.zeros(1, *input_shape)).flatten(1).shape[1]
    backbone.train(was_training)
    return int(size)
