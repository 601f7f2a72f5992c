"""3x3 convolutions by NNPACK's fast algorithms, forward and both gradients (Conv-4's second layer).

On this project's CPUs (AVX2, no AVX-512) oneDNN's direct convolution already runs near the fp32
multiply-add rate, so a faster 3x3 convolution has to do fewer multiplications: Winograd's
F(6x6, 3x3) does 2.25-5x fewer. PyTorch bundles NNPACK, which has it, but calls it only for the
forward and only where oneDNN is absent, and its gradient goes back to oneDNN. :func:`conv3x3` runs
all three products of a convolution on NNPACK (``nnpack_conv2d`` of :mod:`metalab.nn.native`, on
PyTorch's own threads), since each of them is a convolution:

    y  = x * w                       (NCHW, padding 1: Winograd)
    dx = dy * flip(w)^T              (a 3x3 convolution, weights flipped and in/out swapped: Winograd)
    dw = (pad(x)^T * dy^T)^T         (images as channels, dy as an H x W kernel: FFT)

The backward is not differentiated again (``once_differentiable``): only forwards whose gradients
are taken once use it (query passes, first-order inner loops, evaluation). (Written as autograd
functions of each other, the products are differentiable to any order and were exact in float64,
but in float32 a second-order MAML meta-gradient through them drifted 7e-3-9e-3 from float64 on
some tasks where oneDNN's stayed at 2e-6, whatever the primitive inside; not understood, so not
shipped.) NNPACK pays on large maps and batches only (:data:`MIN_SIZE`, :data:`MAX_SIZE`,
:data:`MIN_IMAGES`), and only on CPUs without AVX-512 (:func:`pays_on_this_cpu`).
Its results differ from a direct convolution by rounding (relative 1e-6 to 1e-5 in float32); it
has no float64 kernels, so float64 runs never take this path.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from metalab.nn import native

#: the map sides and the smallest batch where NNPACK's forward and both gradients together beat oneDNN's
#: on an AVX2-only CPU (AMD EPYC, Zen; the only kind where they run by default, :func:`pays_on_this_cpu`).
#: Measured 2026-12-02 with an ad-hoc script (not kept; ``benchmarks/speed/native_kernels.py --parts
#: convolution`` does the same now; 2 threads, forward + autograd backward, ms): 14x14
#: maps of 75 images (channels-last) 30.4 vs oneDNN 43.8, 300 images 138 vs 174, 16/20/32 images (NCHW)
#: 0.80-0.85x; 12x12 0.71x; 10x10 0.92x; 10 images 1.07x; 16x16 maps 1.5x. NNPACK's kernels end at 16x16,
#: and the weight gradient's kernel is the map.
MIN_SIZE, MAX_SIZE = 12, 14
MIN_IMAGES = 16


def pays_on_this_cpu() -> bool:
    """Whether NNPACK beats oneDNN here: where PyTorch's CPU capability is AVX2. NNPACK's x86 kernels are
    AVX2 + FMA; oneDNN's direct convolution uses AVX-512 where the CPU has it, and on such a CPU (AMD EPYC,
    Zen 5, 2 threads; ``benchmarks/speed/native_kernels.py --parts convolution``, 2026-12-02) NNPACK took
    1.21x oneDNN's time on 75 x 64 x 14 x 14 maps, 1.03x on 300, 1.75-1.94x on 16-20, 2.51x on 7 x 7."""
    return torch.backends.cpu.get_cpu_capability() == "AVX2"


def supported(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> bool:
    """True where :func:`conv3x3` computes ``F.conv2d(x, weight, None, stride, padding, dilation, groups)``
    and is faster: float32 on the CPU, a 3x3 kernel of stride 1 and padding 1, no dilation or groups,
    maps of :data:`MIN_SIZE` to :data:`MAX_SIZE` and batches of :data:`MIN_IMAGES` or more, not under autocast."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 4 and weight.dim() == 4 and tuple(weight.shape[2:]) == (3, 3) and groups == 1
            and tuple(stride) == (1, 1) and tuple(padding) == (1, 1) and tuple(dilation) == (1, 1)
            and x.shape[0] >= MIN_IMAGES and MIN_SIZE <= min(x.shape[2:]) and max(x.shape[2:]) <= MAX_SIZE
            and not torch.is_autocast_enabled("cpu") and native.available())


def _convolve(x: Tensor, weight: Tensor, padding: int) -> Tensor:
    """x [N, C, H, W] * weight [O, C, kH, kW] -> [N, O, H + 2 padding - kH + 1, ...] (NCHW, stride 1)."""
    return torch.ops.metalab_native.nnpack_conv2d(x.contiguous(), weight.contiguous(), padding)


def _weight_gradient(x: Tensor, grad_out: Tensor) -> Tensor:
    """dw [O, C, 3, 3] of x [N, C, H, W] * w (padding 1) from dy [N, O, H, W]: (pad(x)^T * dy^T)^T."""
    return torch.ops.metalab_native.nnpack_conv2d_weight_grad(x, grad_out, 1)


class _Conv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return _convolve(x, weight, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = _convolve(grad_out, weight.flip(2, 3).transpose(0, 1), 1)
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_gradient(x, grad_out)
        return grad_x, grad_weight


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for x [N, C, H, W] and weight [O, C, 3, 3] by NNPACK;
    the output [N, O, H, W] is in the default (NCHW) layout. Check :func:`supported` first."""
    native.require("conv3x3")
    out = _Conv3x3.apply(x, weight)
    return out if bias is None else out + bias.view(1, -1, 1, 1)
