"""3x3 convolutions by NNPACK's fast algorithms, forward and both gradients (Conv-4's second layer).

On AVX2 CPUs oneDNN's direct convolution already runs near the fp32 multiply-add rate, so a faster 3x3
convolution has to do fewer multiplications: transform-based algorithms (FFT, Winograd) do 2.25-5x fewer.
PyTorch bundles NNPACK, which has them, but calls it only for the forward and only where oneDNN is
absent, and its gradient goes back to oneDNN. :func:`conv3x3` runs all three products of a convolution
on NNPACK (``nnpack_conv2d`` of :mod:`metalab.accel.native`, on PyTorch's own threads), since each of them
is a convolution:

    y  = x * w + b                   (padding 1; NNPACK's choice of algorithm)
    dx = dy * flip(w)^T              (a 3x3 convolution, weights flipped and in/out swapped)
    dw = (x^T * dy^T)^T              (images as channels, dy as an H x W kernel, x padded: FFT 16x16)

Maps may be NCHW or channels-last (the query pass's layout): the kernel transposes a thread's slice of
images into NNPACK's NCHW planes and back in 8x8 register blocks, and returns each result in its
input's layout, so no layout copy runs around it.

The backward is not differentiated again (``once_differentiable``): only forwards whose gradients
are taken once use it (query passes, first-order inner loops, evaluation). (Written as autograd
functions of each other, the products are differentiable to any order and were exact in float64, but
in float32 a second-order MAML meta-gradient through them drifted far more from float64 than
oneDNN's did (benchmarks/speed/RESULTS.md); not understood, so not shipped.) NNPACK pays on large
maps and batches only (:data:`MIN_SIZE`, :data:`MAX_SIZE`, :data:`MIN_IMAGES`), on AVX2 CPUs (with
AVX-512 oneDNN is faster), and its workspaces and the layout scratch take memory whatever the batch:
by default (:func:`pays_by_default`) it runs only on AVX2 CPUs and only on batches of
:data:`DEFAULT_MIN_IMAGES` or more, where that memory is small beside the rest of a
meta-iteration's.
Its results differ from a direct convolution by rounding (relative 1e-6 to 1e-5 in float32); it
has no float64 kernels, so float64 runs never take this path.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from metalab.accel import native

#: the map sides and the smallest batch where NNPACK's forward and both gradients together beat oneDNN's on an
#: AVX2 CPU (NNPACK's kernels end at 16x16; the weight gradient's kernel is the map). Measured with
#: ``benchmarks/speed/native_kernels.py --parts convolution`` (benchmarks/speed/RESULTS.md, "NNPACK").
MIN_SIZE, MAX_SIZE = 12, 14
MIN_IMAGES = 16

#: the smallest batch on which NNPACK runs without being asked (``speed.winograd=null``): below it, its fixed
#: workspace memory outweighs the time it saves (benchmarks/speed/RESULTS.md, "NNPACK by default").
DEFAULT_MIN_IMAGES = 150


def pays_by_default(x: Tensor) -> bool:
    """Whether ``speed.winograd=null`` (the default) takes NNPACK for the map ``x`` [N, C, H, W]: where PyTorch's
    CPU capability is AVX2 (NNPACK's x86 kernels are AVX2 + FMA; oneDNN's direct convolution uses AVX-512 where
    the CPU has it and is faster there), on :data:`DEFAULT_MIN_IMAGES` images or more."""
    return x.shape[0] >= DEFAULT_MIN_IMAGES and torch.backends.cpu.get_cpu_capability() == "AVX2"


def supported(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> bool:
    """True where :func:`conv3x3` computes ``F.conv2d(x, weight, None, stride, padding, dilation, groups)``
    and is faster: float32 on the CPU, a 3x3 kernel of stride 1 and padding 1, no dilation or groups,
    maps of :data:`MIN_SIZE` to :data:`MAX_SIZE` and batches of :data:`MIN_IMAGES` or more, not under autocast."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 4 and weight.dim() == 4 and tuple(weight.shape[2:]) == (3, 3) and groups == 1
            and tuple(stride) == (1, 1) and tuple(padding) == (1, 1) and tuple(dilation) == (1, 1)
            and x.shape[0] >= MIN_IMAGES and MIN_SIZE <= min(x.shape[2:]) and max(x.shape[2:]) <= MAX_SIZE
            and not torch.is_autocast_enabled("cpu") and native.available())


def _map(x: Tensor) -> Tensor:
    """``x`` as the kernels take it: NCHW-contiguous or channels-last (any other strides are copied to NCHW)."""
    return x if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()


def _convolve(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """x [N, C, H, W] * weight [O, C, kH, kW] + bias [O] -> [N, O, H + 2 padding - kH + 1, ...] (stride 1), in
    x's memory format (NCHW or channels-last; NNPACK's NCHW planes are transposed in the kernel)."""
    return torch.ops.metalab_native.nnpack_conv2d(_map(x), weight.contiguous(), bias, padding)


def _weight_gradient(x: Tensor, grad_out: Tensor) -> Tensor:
    """dw [O, C, 3, 3] of x [N, C, H, W] * w (padding 1) from dy [N, O, H, W]: (pad(x)^T * dy^T)^T."""
    return torch.ops.metalab_native.nnpack_conv2d_weight_grad(_map(x), _map(grad_out), 1)


class _Conv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _convolve(x, weight, None if bias is None else bias.detach(), 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _convolve(grad_out, weight.flip(2, 3).transpose(0, 1), None, 1)
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_gradient(x, grad_out)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for x [N, C, H, W] and weight [O, C, 3, 3] by NNPACK; the
    output [N, O, H, W] is in x's memory format (NCHW or channels-last). Check :func:`supported` first."""
    native.require("conv3x3")
    return _Conv3x3.apply(x, weight, bias)
