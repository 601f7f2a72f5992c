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
any case. The backward is not differentiable again (``once_differentiable``), so it serves forward
passes whose gradients are taken once: the query pass of a meta-step (its gradient is then carried
through the inner loop by the adaptation stage) and first-order inner loops. A second-order inner
loop uses PyTorch's kernels (:class:`metalab.nn.functional.ForwardSettings` ``once_differentiable``).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from metalab.nn import native

#: maps from this size on use the kernel; below it PyTorch's three calls cost about the same or less
#: (forward+backward, 2 threads, `benchmarks/speed/native_kernels.py`, 2026-12-02 03:00 UTC:
#: [75, 64, 7, 7] = 0.9 MB 1.36 vs 1.49 ms, [75, 64, 3, 3] = 0.16 MB 0.92 vs 0.80 ms,
#: [300, 64, 14, 14] 16.2 vs 23.1 ms).
MIN_BYTES = 256 << 10


class _BatchNormReluPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, gamma: Tensor, beta: Tensor, eps: float):
        out, index, mean, var = torch.ops.metalab_native.batch_norm_relu_pool(y, gamma, beta, eps)
        ctx.save_for_backward(y, index, mean, var, gamma)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor, _mean_grad, _var_grad):
        y, index, mean, var, gamma = ctx.saved_tensors
        dy, dgamma, dbeta = torch.ops.metalab_native.batch_norm_relu_pool_backward(grad, index, y, mean, var,
                                                                                   gamma, ctx.eps)
        return dy, dgamma, dbeta, None


def supported(x: Tensor) -> bool:
    """True when :func:`batch_norm_relu_pool` takes ``x``: a channels-last float32/float64 CPU map of at
    least :data:`MIN_BYTES` and 2x2, and the compiled kernels are available."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.shape[2] >= 2 and x.shape[3] >= 2 and x.numel() * x.element_size() >= MIN_BYTES
            and x.is_contiguous(memory_format=torch.channels_last) and native.available())


def batch_norm_relu_pool(x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """``max_pool2d(relu(batch_norm(x, training=True)), 2)`` in two passes.

    Args:
        x: [N, C, H, W] in channels-last memory format (every channel normalised over N, H, W; for
            folded tasks C = T * C_task, each task's channels with their own statistics).
        gamma, beta: [C] (None: 1 and 0).
    Returns:
        (output [N, C, H // 2, W // 2] channels-last, batch mean [C], biased batch variance [C]); the
        statistics are detached (float64).
    """
    native.require("batch_norm_relu_pool")
    n, c, h, w = x.shape
    gamma = torch.ones(c, dtype=x.dtype) if gamma is None else gamma
    beta = torch.zeros(c, dtype=x.dtype) if beta is None else beta
    y = x.permute(0, 2, 3, 1)  # [N, H, W, C]: a view of the channels-last memory
    out, mean, var = _BatchNormReluPool.apply(y, gamma, beta, eps)
    return out.permute(0, 3, 1, 2), mean, var
