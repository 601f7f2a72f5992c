"""A 1x1 convolution of patches, ReLU and a 2x2 max-pool as one compiled kernel (Conv-4's first block).

:func:`metalab.accel.conv_norm.conv_batch_norm` turns a thin-input convolution + BatchNorm into a 1x1
convolution of the image's patches with normalised weights; Conv-4 then applies ReLU and a 2x2
max-pool. Done with PyTorch's kernels, the [N, 64, 28, 28] map before the pool (four times the output,
the widest activation of the network) is written, pooled, and in the backward zero-filled, scattered to
and read again by the convolution's weight gradient. :func:`patch_conv_pool` does all of it in one pass
per image and keeps only a byte per output (which window position held the maximum, or "inactive"
where the maximum is <= 0), from which the weight gradient is one more pass:

    out[n, i, j, t, c]  = relu(max_a  w[t, c] . p[n, a(i, j), t])             a over the 2x2 window
    dL/dw[t, c]         = sum_{n, i, j active} g[n, i, j, t, c] * p[n, a*(i, j, c), t]

The weight gradient is linear in ``g`` and, away from ties, does not depend on ``w`` (the argmax is
piecewise constant), so its own derivative is the map ``gg -> gg[t, c] . p`` at the maxima: that is
what the second-order gradients of a MAML inner loop run through. Same function and gradients as
``relu(max_pool2d(conv2d(...)))``, up to float rounding; where two window values tie exactly, the
first (row-major) wins, as in ``max_pool2d``. The patches themselves get no gradient (they are the
network's input images), so the first block is the only user.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metalab.accel import native


class _PatchConvPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, patches: Tensor, weight: Tensor) -> Tensor:
        out, index = torch.ops.metalab_native.patch_conv_pool(patches, weight)
        ctx.save_for_backward(patches, index)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        patches, index = ctx.saved_tensors
        return None, _WeightGradient.apply(grad, index, patches)


class _WeightGradient(torch.autograd.Function):
    """dL/dweight of :class:`_PatchConvPool` (linear in ``grad``)."""

    @staticmethod
    def forward(ctx, grad: Tensor, index: Tensor, patches: Tensor) -> Tensor:
        ctx.save_for_backward(index, patches)
        return torch.ops.metalab_native.patch_conv_pool_weight_grad(grad, index, patches)

    @staticmethod
    def backward(ctx, grad_of_weight_grad: Tensor):
        index, patches = ctx.saved_tensors
        return torch.ops.metalab_native.patch_conv_pool_gather(grad_of_weight_grad, index, patches), None, None


def supported(patches: Tensor) -> bool:
    """True when :func:`patch_conv_pool` can take ``patches``: float32/float64 on the CPU, needing no
    gradient, and the compiled kernels are available (built on first use, see :mod:`metalab.accel.native`)."""
    return (patches.device.type == "cpu" and patches.dtype in (torch.float32, torch.float64)
            and not patches.requires_grad and native.available())


def patch_conv_pool(patches: Tensor, weight: Tensor) -> Tensor:
    """``relu(max_pool2d(conv1x1(patches, weight), 2))`` in one pass.

    Args:
        patches: [N, H, W, T, D] (each position's patch of D values for each of T tasks; no gradient).
        weight: [T, C, D] (task t's 1x1 convolution weights over the patch values).
    Returns:
        [N, H // 2, W // 2, T, C] (contiguous: channels-last with the T*C channels innermost).
    """
    if patches.requires_grad:
        raise ValueError("patch_conv_pool gives no gradient to its patches; use the PyTorch path "
                         "(conv2d + relu + max_pool2d) when the input needs one")
    native.require("patch_conv_pool")
    return _PatchConvPool.apply(patches, weight)
