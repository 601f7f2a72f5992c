"""Transformation layers T after a network's layers: the network that T-net and MT-net share (Lee & Choi 2018).

Each adapted layer's output passes through a meta-learned linear map T that the inner loop leaves alone
(the paper's y = T W x; the authors' code applies T to W x + b, as here), initialised to the identity:

    after a convolution with C_out channels:  a 1x1 convolution C_out -> C_out, no bias
    after a linear layer with D_out outputs:  a linear map D_out -> D_out, no bias

T is inserted beside its layer in the same ``nn.Sequential``, under the layer's name + ``_transform``, so the
network's own parameters keep their names, and the network stays a tree of standard layers (the speed backend
runs it as it runs the original).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

#: what follows a transformed layer's name in its transformation's name
SUFFIX = "_transform"


def identity_transform(layer: nn.Conv2d | nn.Linear) -> nn.Module:
    """T for ``layer``'s outputs, equal to the identity."""
    transform: nn.Conv2d | nn.Linear
    if isinstance(layer, nn.Conv2d):
        transform = nn.Conv2d(layer.out_channels, layer.out_channels, kernel_size=1, bias=False)
        eye = torch.eye(layer.out_channels)[:, :, None, None]
    else:
        transform = nn.Linear(layer.out_features, layer.out_features, bias=False)
        eye = torch.eye(layer.out_features)
    with torch.no_grad():
        transform.weight.copy_(eye)
    return transform.to(layer.weight.device, layer.weight.dtype)


def add_transforms(network: nn.Module) -> list[str]:
    """Insert an identity T after every ``Conv2d`` and ``Linear`` of ``network`` (in place).

    Returns the names of the transformed layers, in the network's order (their T is ``name + SUFFIX``).
    Raises ValueError when such a layer is not the child of an ``nn.Sequential`` (T would have no place).
    """
    transformed: list[str] = []
    layers = (nn.Conv2d, nn.Linear)
    for parent_name, parent in list(network.named_modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        children: list[tuple[str, nn.Module]] = []
        for name, child in parent.named_children():
            children.append((name, child))
            if isinstance(child, layers) and type(child) in layers:
                children.append((name + SUFFIX, identity_transform(child)))
                transformed.append(f"{parent_name}.{name}" if parent_name else name)
        parent._modules = OrderedDict(children)
    order = {name: position for position, (name, _) in enumerate(network.named_modules())}
    transformed.sort(key=order.__getitem__)
    done = set(transformed)
    missed = [name for name, module in network.named_modules()
              if type(module) in layers and name not in done and not name.endswith(SUFFIX)]
    if missed:
        raise ValueError(f"transformation layers go after layers inside an nn.Sequential; {', '.join(missed)} "
                         f"are not: use backbone conv4, resnet12 or mlp")
    return transformed


def is_transform(parameter_name: str) -> bool:
    """Whether a parameter of a network built by :func:`add_transforms` belongs to a T."""
    return parameter_name.rpartition(".")[0].endswith(SUFFIX)
