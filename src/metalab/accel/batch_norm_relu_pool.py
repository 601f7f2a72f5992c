"""Training-mode BatchNorm, ReLU and a 2x2 max-pool as one compiled kernel (Conv-4's blocks 2-4).

With PyTorch's kernels, a Conv-4 block after its convolution makes four passes over the
[N, 64, H, W] map forward (batch statistics, normalisation, and the pool reading it) and, backward,
zero-fills a map-sized gradient, scatters into it, and runs BatchNorm's backward over it twice. On the
query sets of a MAML meta-iteration those passes cost as much as a third of the convolutions
themselves (benchmarks/speed/RESULTS.md). :func:`batch_norm_relu_pool` does two passes each way:

    forward:   mean_c, var_c over (N, H, W)            then   out = max_window relu(a_c y + b_c)
               a_c = gamma_c / sqrt(var_c + eps),  b_c = beta_c - a_c mean_c
    backward:  with g_bn = grad at each window's maximum (0 elsewhere and where the maximum is <= 0),
               S1_c = sum g_bn,  S2_c = sum g_bn xhat  (sums over the maxima only: a quarter of the map)
               dy = a_c (g_bn - S1_c / M - xhat S2_c / M),  dgamma = S2,  dbeta = S1,  M = N H W

keeping a byte per output (where the maximum was) besides ``y``, which BatchNorm's backward needs in
any case. The backward is differentiable once more, so the kernel also serves second-order inner
loops; that double backward is two more passes per channel. With a = the gradient arriving for dy,
b and c those for dgamma and dbeta, r = 1 / sqrt(var_c + eps), G1 = S2 and Sg = S1 as above, and the
sums Sa = sum a, A1 = sum a xhat, Sag = sum over the maxima of a g:

    grad of the incoming gradient (at each active maximum) = gamma r (a - Sa/M - xhat A1/M) + b xhat + c
    grad of gamma = r (Sag - Sa Sg/M - A1 G1/M)
    grad of y = P g_bn + Q a + R y + S        (per-channel P, Q, R, S: batch_norm_relu_pool_planes.cpp)

It is not differentiable a third time (``once_differentiable``). Maps in channels-last memory run the
vectorised kernels of ``batch_norm_relu_pool.cpp``; maps in the default layout (MAML's inner loop)
and every double backward run the channel-by-channel kernels of ``batch_norm_relu_pool_planes.cpp``.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from metalab.accel import native

#: in forwards whose gradients are taken once, maps from this size on use the kernel; below it PyTorch's three
#: calls cost about the same or less. Where the backward is differentiated again the kernel wins at every size,
#: so :func:`supported` is asked with ``any_size`` there. Measured with ``benchmarks/speed/native_kernels.py``
#: (benchmarks/speed/RESULTS.md, "BatchNorm + ReLU + max-pool").
MIN_BYTES = 256 << 10


def _channels_last(x: Tensor) -> bool:
    """True for a map in channels-last memory that is not also a contiguous NCHW one (N = 1, or 1x1)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _BatchNormReluPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, beta: Tensor, eps: float):
        if _channels_last(x):  # the vectorised kernels take the [N, H, W, C] view of the memory
            out, index, mean, var = torch.ops.metalab_native.batch_norm_relu_pool(x.permute(0, 2, 3, 1), gamma, beta,
                                                                                  eps)
            out, index = out.permute(0, 3, 1, 2), index.permute(0, 3, 1, 2)
        else:
            out, index, mean, var = torch.ops.metalab_native.batch_norm_relu_pool_planes(x, gamma, beta, eps)
        ctx.save_for_backward(x, index, mean, var, gamma)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad: Tensor, _mean_grad, _var_grad):
        x, index, mean, var, gamma = ctx.saved_tensors
        dx, dgamma, dbeta = _BatchNormReluPoolBackward.apply(grad, x, gamma, index, mean, var, ctx.eps)
        return dx, dgamma, dbeta, None


class _BatchNormReluPoolBackward(torch.autograd.Function):
    """The backward as a function of (incoming gradient, x, gamma), so that a second-order inner loop
    can differentiate it; index and statistics are fixed (piecewise constant, resp. handled in the
    formulas of the double backward)."""

    @staticmethod
    def forward(ctx, grad: Tensor, x: Tensor, gamma: Tensor, index: Tensor, mean: Tensor, var: Tensor, eps: float):
        if _channels_last(x):
            grad = grad.contiguous(memory_format=torch.channels_last)
            dx, dgamma, dbeta = torch.ops.metalab_native.batch_norm_relu_pool_backward(
                grad.permute(0, 2, 3, 1), index.permute(0, 2, 3, 1), x.permute(0, 2, 3, 1), mean, var, gamma, eps)
            dx = dx.permute(0, 3, 1, 2)
        else:
            grad = grad.contiguous()
            dx, dgamma, dbeta = torch.ops.metalab_native.batch_norm_relu_pool_backward_planes(grad, index, x, mean,
                                                                                             var, gamma, eps)
        ctx.save_for_backward(grad, x, gamma, index, mean, var, dgamma, dbeta)
        ctx.eps = eps
        return dx, dgamma, dbeta

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_dx: Tensor, grad_dgamma: Tensor, grad_dbeta: Tensor):
        grad, x, gamma, index, mean, var, dgamma, dbeta = ctx.saved_tensors
        layout = torch.channels_last if _channels_last(x) else torch.contiguous_format
        grad_dx = grad_dx.contiguous(memory_format=layout)
        grad_grad, grad_x, grad_gamma = torch.ops.metalab_native.batch_norm_relu_pool_double_backward(
            grad_dx, grad_dgamma, grad_dbeta, grad, index, x, mean, var, gamma, dgamma, dbeta, ctx.eps)
        return grad_grad, grad_x, grad_gamma, None, None, None, None


def supported(x: Tensor, any_size: bool = False) -> bool:
    """True when :func:`batch_norm_relu_pool` takes ``x``: a float32/float64 CPU map of at least 2x2 (and
    of :data:`MIN_BYTES` unless ``any_size``), contiguous in the default or the channels-last memory
    format, and the compiled kernels are available."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.shape[2] >= 2 and x.shape[3] >= 2 and (any_size or x.numel() * x.element_size() >= MIN_BYTES)
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)) and native.available())


def batch_norm_relu_pool(x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """``max_pool2d(relu(batch_norm(x, training=True)), 2)`` in two passes.

    Args:
        x: [N, C, H, W], contiguous in the default or the channels-last memory format (every channel
            normalised over N, H, W; for folded tasks C = T * C_task, each task's channels with their
            own statistics).
        gamma, beta: [C] (None: 1 and 0).
    Returns:
        (output [N, C, H // 2, W // 2] in x's memory format, batch mean [C], biased batch variance [C]);
        the statistics are detached (float64). Differentiable twice.
    """
    native.require("batch_norm_relu_pool")
    c = x.shape[1]
    gamma = torch.ones(c, dtype=x.dtype) if gamma is None else gamma
    beta = torch.zeros(c, dtype=x.dtype) if beta is None else beta
    return _BatchNormReluPool.apply(x, gamma, beta, eps)
