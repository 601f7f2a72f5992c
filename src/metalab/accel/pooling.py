"""Max-pooling whose backward keeps only the indices of the maxima, not the pooled input.

PyTorch's ``max_pool2d`` saves its input for the backward although the backward reads only the
input's shape and the indices of the maxima. In Conv-4 that input is the widest activation of
each block ([N, 64, 28, 28] in the first: 15 MB for 75 Omniglot queries), so saving it holds the
largest tensor of the forward until the backward reaches it. :func:`max_pool2d` computes the same
values and the same gradients (the very kernels: ``max_pool2d_with_indices`` and its backward)
while the input can be freed as soon as the next layer has consumed it. Its backward is built from
differentiable operations, so second-order gradients (MAML's inner loop) work as through
``F.max_pool2d``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class _MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple,
                ceil_mode: bool) -> Tensor:
        values, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(indices)
        ctx.settings = (kernel, stride, padding, dilation, ceil_mode)
        ctx.shape = x.shape
        ctx.memory_format = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        ctx.options = {"dtype": x.dtype, "device": x.device}
        return values

    @staticmethod
    def backward(ctx, grad: Tensor):
        (indices,) = ctx.saved_tensors
        return _ScatterToMaxima.apply(grad, indices, ctx.shape, ctx.memory_format, ctx.options,
                                        ctx.settings), None, None, None, None, None


class _ScatterToMaxima(torch.autograd.Function):
    """The gradient of the pooling's input: ``grad`` scattered to the maxima (linear in ``grad``)."""

    @staticmethod
    def forward(ctx, grad: Tensor, indices: Tensor, shape: torch.Size, memory_format: torch.memory_format,
                options: dict, settings: tuple) -> Tensor:
        ctx.save_for_backward(indices)
        # the kernel reads only the shape and memory format of the pooled input: an unfilled stand-in.
        shape_of_input = torch.empty(shape, memory_format=memory_format, **options)
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, shape_of_input, *settings, indices)

    @staticmethod
    def backward(ctx, grad_of_input: Tensor):
        # the adjoint of the scatter: gather the values at the maxima (what F.max_pool2d's double backward does).
        (indices,) = ctx.saved_tensors
        flat = grad_of_input.flatten(2)
        gathered = flat.gather(2, indices.flatten(2)).view(indices.shape)
        return gathered, None, None, None, None, None


def _is_channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


#: inputs from this size on are pooled by :func:`max_pool2d`'s own function; below it, the memory saved is
#: small and the Python-level autograd.Function costs more than it saves (a MAML inner loop on 5-image
#: support sets was slower with it).
MIN_BYTES = 2 << 20


def max_pool2d(x: Tensor, pool: nn.MaxPool2d) -> Tensor:
    """``pool(x)`` for an ``nn.MaxPool2d`` that returns no indices; for inputs of :data:`MIN_BYTES` or
    more, only the indices are kept for the backward."""
    if x.numel() * x.element_size() < MIN_BYTES or x.dim() != 4:
        return pool(x)
    pair = torch.nn.modules.utils._pair
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return _MaxPool2d.apply(x, pair(pool.kernel_size), pair(stride), pair(pool.padding), pair(pool.dilation),
                            pool.ceil_mode)
