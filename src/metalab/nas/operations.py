"""The candidate operations of a DARTS cell edge and the mixed operation over them.

The operator set of Liu et al. 2019 ("DARTS: Differentiable Architecture Search", section 3.1):
``none`` (zero), ``skip_connect`` (identity; a factorized reduce on a stride-2 edge), 3x3 max and average
pooling, 3x3 and 5x5 separable convolutions, 3x3 and 5x5 dilated separable convolutions. MetaNAS (Elsken
et al. 2020) searches a few-shot set without ``none`` and with plain 3x3 and 1x5-5x1 convolutions
(:data:`FEW_SHOT_OPERATIONS`). Every convolution is ReLU -> conv -> BatchNorm, as in the paper's code; in the
search the BatchNorm layers have no affine parameters (``affine=False``, section A.1.1 of the paper), and a
pooling edge gets one after the pool, so that the scales of the candidates compare.

The mixed operation (eq. 2 of DARTS) is  o_bar(x) = sum_o softmax(alpha)_o o(x).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the DARTS operator set (the order of alpha's columns).
DARTS_OPERATIONS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                    "dil_conv_3x3", "dil_conv_5x5")
#: the MetaNAS few-shot operator set (the authors' ``PRIMITIVES_FEWSHOT``).
FEW_SHOT_OPERATIONS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "conv_1x5_5x1", "conv_3x3", "sep_conv_3x3",
                       "dil_conv_3x3")
#: the operator that means "no edge": never chosen by the discretisation.
ZERO = "none"


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv(kernel, stride, padding, dilation) -> BatchNorm: [B, C_in, H, W] -> [B, C_out, H', W']."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int,
                 padding: int | tuple[int, int], affine: bool, dilation: int = 1) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilatedConv(nn.Sequential):
    """ReLU -> depthwise conv (dilated) -> pointwise conv -> BatchNorm (``dil_conv_*``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out, affine=affine))


class SeparableConv(nn.Sequential):
    """Two dilated convolutions of dilation 1, the first with the stride (``sep_conv_*``, as in the paper)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool) -> None:
        super().__init__(DilatedConv(c_in, c_in, kernel, stride, padding, 1, affine),
                         DilatedConv(c_in, c_out, kernel, 1, padding, 1, affine))


class FactorizedReduce(nn.Module):
    """Halve H and W with two 1x1 stride-2 convolutions on offset grids, concatenated: [B, C_in, H, W] ->
    [B, C_out, ceil(H/2), ceil(W/2)] (the identity of a reduction edge). Odd sizes pad the offset grid."""

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"a factorized reduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # the zero row/column is never sampled for even sizes
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output's shape (strided like the edge)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def _pool(kind: str, channels: int, stride: int, affine: bool, search: bool) -> nn.Module:
    pool: nn.Module = (nn.MaxPool2d(3, stride, 1) if kind == "max"
                       else nn.AvgPool2d(3, stride, 1, count_include_pad=False))
    return nn.Sequential(pool, nn.BatchNorm2d(channels, affine=False)) if search else pool


#: name -> (channels, stride, affine, search) -> module; every operation keeps the channels C -> C
OPERATIONS: dict[str, Callable[[int, int, bool, bool], nn.Module]] = {
    "none": lambda c, stride, affine, search: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine, search: _pool("max", c, stride, affine, search),
    "avg_pool_3x3": lambda c, stride, affine, search: _pool("avg", c, stride, affine, search),
    "skip_connect": lambda c, stride, affine, search: (nn.Identity() if stride == 1
                                                       else FactorizedReduce(c, c, affine)),
    "sep_conv_3x3": lambda c, stride, affine, search: SeparableConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine, search: SeparableConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine, search: DilatedConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine, search: DilatedConv(c, c, 5, stride, 4, 2, affine),
    "conv_3x3": lambda c, stride, affine, search: ReLUConvBN(c, c, 3, stride, 1, affine),
    "conv_1x5_5x1": lambda c, stride, affine, search: nn.Sequential(
        nn.ReLU(), nn.Conv2d(c, c, (1, 5), (1, stride), (0, 2), bias=False),
        nn.Conv2d(c, c, (5, 1), (stride, 1), (2, 0), bias=False), nn.BatchNorm2d(c, affine=affine)),
}


def check_operations(names: Sequence[str]) -> None:
    """Refuse an empty, repeated or unknown operator list, naming the known ones."""
    unknown = [name for name in names if name not in OPERATIONS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"the operations must be distinct names among {', '.join(OPERATIONS)}; got {list(names)}")
    if all(name == ZERO for name in names):
        raise ValueError("the operations need at least one besides 'none'")


def build_operation(name: str, channels: int, stride: int, affine: bool, search: bool = False) -> nn.Module:
    """One candidate operation on ``channels`` channels with ``stride`` (1, or 2 on a reduction edge)."""
    if name not in OPERATIONS:
        raise ValueError(f"unknown operation {name!r}; known: {', '.join(OPERATIONS)}")
    return OPERATIONS[name](channels, stride, affine, search)


class MixedOperation(nn.Module):
    """Every candidate on one edge, weighted: x [B, C, H, W], weights [O] (the normalised alpha of the edge) ->
    sum_o weights[o] * op_o(x)  [B, C, H/stride, W/stride]  (DARTS eq. 2)."""

    def __init__(self, operations: Sequence[str], channels: int, stride: int, affine: bool = False) -> None:
        super().__init__()
        self.names = list(operations)
        self.ops = nn.ModuleList(build_operation(name, channels, stride, affine, search=True) for name in operations)

    def forward(self, x: Tensor, weights: Tensor, drop_prob: float = 0.0) -> Tensor:
        """``drop_prob`` > 0: each candidate's output but the identity's is zeroed per example with that
        probability (the kept ones divided by 1 - p), as in the MetaNAS authors' ``MixedOp``."""
        outputs = [op(x) for op in self.ops]
        if drop_prob > 0:
            outputs = [out if isinstance(op, nn.Identity) else drop_path(out, drop_prob)
                       for op, out in zip(self.ops, outputs)]
        return sum((w * out for w, out in zip(weights, outputs)), torch.zeros((), dtype=x.dtype))


def drop_path(x: Tensor, p: float) -> Tensor:
    """x [B, ...] with each example zeroed with probability p and the others divided by 1 - p."""
    keep = torch.bernoulli(torch.full((x.shape[0],) + (1,) * (x.dim() - 1), 1.0 - p, dtype=x.dtype,
                                      device=x.device))
    return x * keep / (1.0 - p)
