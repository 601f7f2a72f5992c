"""A thin-input convolution followed by BatchNorm, computed as one matmul of normalised weights.

When every output value of a convolution is ``w_c . p + b_c`` over a patch ``p`` of only
``D = C_in * kh * kw`` input values (D = 9 for Omniglot's one-channel 3x3 first layer, 27 for RGB),
batch normalisation with the statistics of the current set is again an affine map of the patch:

    mean_c = w_c . mu + b_c,      var_c = w_c^T Sigma w_c        (mu [D], Sigma [D, D]: the patches' mean
                                                                  and covariance over the set's positions)
    BN(conv(x))_c = a_c w_c . (p - mu) + beta_c,      a_c = gamma_c / sqrt(var_c + eps)

So convolution + batch norm become one matmul of the centred patches with the normalised weights
``a_c w_c``, and the batch statistics come from a D x D covariance instead of reductions over the
[N, C, H, W] output. In meta-training this is the widest layer of Conv-4 (64 channels at full
resolution): PyTorch's 1-channel convolution kernels, its batch norm over the 28x28 map and the
layout conversions around them were a large share of a MAML meta-iteration (benchmarks/speed/RESULTS.md).
The result is the same function of the same parameters, so autograd gives the same gradients of
any order (the conv bias cancels, as in BatchNorm, and gets a zero gradient); the tests compare
values, gradients and second-order gradients with ``F.conv2d`` + ``F.batch_norm`` in float64.

With running statistics (evaluation with ``bn_mode: running``) the map is
``a_c (w_c . p + b_c - running_mean_c) + beta_c`` with ``a_c = gamma_c / sqrt(running_var_c + eps)``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.accel import patch_conv_pool as fused

#: the largest patch (C_in * kh * kw) folded this way: the covariance is D x D, and the matmul's inner
#: dimension D is too small for convolution kernels to be efficient.
MAX_PATCH = 32


def foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """True when ``conv`` followed by ``norm`` can run as :func:`conv_batch_norm`."""
    if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)):
        return False
    return (conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and norm.num_features == conv.out_channels
            and conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] <= MAX_PATCH)


def _per_task(value: Tensor | None, tasks: int, shape: tuple[int, ...], like: Tensor, fill: float) -> Tensor:
    """A parameter of ``shape`` (shared) or [T, *shape] (per task) as [T, *shape]; None -> ``fill``."""
    if value is None:
        return torch.full((tasks, *shape), fill, dtype=like.dtype, device=like.device)
    return value.expand(tasks, *shape) if value.dim() == len(shape) else value


def conv_batch_norm(
    conv: nn.Conv2d,
    norm: nn.BatchNorm2d,
    x: Tensor,
    tasks: int,
    params: Mapping[str, Tensor | None],
    statistics: str = "batch",
    running: tuple[Tensor, Tensor] | None = None,
    channels_last: bool = False,
    then: Callable[[Tensor], Tensor] | None = None,
    slice_bytes: int = 0,
    relu_max_pool: bool = False,
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """``norm(conv(x))`` for T tasks in the folded layout of :func:`metalab.nn.functional.task_forward`,
    or ``then(norm(conv(x)))``.

    After the fold, each image's output depends on that image alone (the batch statistics are
    already in the weights). So with ``then`` (layers that act on each image alone, e.g. ReLU +
    max-pool) and ``slice_bytes``, the output is made and consumed a slice of images at a time:
    the widest activation of the network ([N, 64, 28, 28] for Conv-4, 15 MB at 75 Omniglot queries)
    and its gradient then exist only ``slice_bytes`` at a time.

    Args:
        x: inputs [N, T*C_in, H, W] (task t's images are channels t*C_in:(t+1)*C_in).
        params: ``weight`` [C, C_in, kh, kw] or [T, C, C_in, kh, kw], ``bias`` [C] or [T, C] (or None),
            ``norm_weight`` / ``norm_bias`` [C] or [T, C] (or None: no affine transform).
        statistics: "batch" (each task normalised with its own statistics) or "running".
        running: (running_mean [C], running_var [C]), needed for ``statistics="running"``.
        channels_last: lay the output out channels-last (else contiguous NCHW).
        then: applied to the output (per slice, with ``slice_bytes``); it must act on each image alone.
        slice_bytes: the output is made in slices of images of at most about this size (0: at once).
        relu_max_pool: ``then`` is ReLU and a 2x2 max-pool of stride 2 (either order): the 1x1 convolution
            and both run as one compiled kernel (:mod:`metalab.accel.patch_conv_pool`) when it is available
            and ``x`` needs no gradient; ``then`` runs otherwise.
    Returns:
        (output [N, T*C, Ho, Wo] or ``then`` of it, batch statistics) where the statistics are the per-channel mean and
        unbiased variance of the convolution's output averaged over the tasks ([C] each, detached),
        or None with running statistics.
    """
    if isinstance(conv.padding, str):  # foldable() refuses it
        raise ValueError(f"conv_batch_norm needs a convolution with numeric padding, got padding={conv.padding!r}")
    n, c_in = x.shape[0], x.shape[1] // tasks
    out_channels = conv.out_channels
    kh, kw = conv.kernel_size
    size = c_in * kh * kw
    height = (x.shape[2] + 2 * conv.padding[0] - conv.dilation[0] * (kh - 1) - 1) // conv.stride[0] + 1
    width = (x.shape[3] + 2 * conv.padding[1] - conv.dilation[1] * (kw - 1) - 1) // conv.stride[1] + 1
    positions = height * width
    count = n * positions

    patches = F.unfold(x.reshape(n * tasks, c_in, *x.shape[2:]), conv.kernel_size, conv.dilation,
                       conv.padding, conv.stride)  # [N*T, D, L]
    patches = patches.view(n, tasks, size, positions)
    weight = _per_task(params["weight"], tasks, (out_channels, c_in, kh, kw), x, 0.0).reshape(tasks, out_channels, size)
    bias = _per_task(params.get("bias"), tasks, (out_channels,), x, 0.0)
    gamma = _per_task(params.get("norm_weight"), tasks, (out_channels,), x, 1.0)
    beta = _per_task(params.get("norm_bias"), tasks, (out_channels,), x, 0.0)

    record = None
    if statistics == "batch":
        mean = patches.mean((0, 3))  # [T, D]
        patches = patches - mean[None, :, :, None]
        per_task = patches.transpose(0, 1)  # [T, N, D, L]
        covariance = (per_task @ per_task.transpose(2, 3)).sum(1) / count  # [T, D, D]
        variance = ((weight @ covariance) * weight).sum(-1)  # [T, C]: var_c = w_c^T Sigma w_c
        scale = gamma * torch.rsqrt(variance + norm.eps)
        # the conv bias cancels (zero gradient, as through F.batch_norm) but stays in the graph, so that
        # the inner loop's autograd.grad finds every parameter it differentiates.
        shift = beta + scale * (bias - bias)
        with torch.no_grad():
            output_mean = (weight @ mean.unsqueeze(-1)).squeeze(-1) + bias
            record = (output_mean.mean(0), (variance * count / max(count - 1, 1)).mean(0))
    elif statistics == "running":
        if running is None or running[0] is None:
            raise ValueError("conv_batch_norm with running statistics needs (running_mean, running_var)")
        running_mean, running_var = running
        scale = gamma * torch.rsqrt(running_var + norm.eps)
        shift = scale * (bias - running_mean) + beta
    else:
        raise ValueError(f"statistics must be 'batch' or 'running', got {statistics!r}")

    # One grouped 1x1 convolution of the patches with the normalised weights; the shift rides along as
    # an extra input channel that is always 1, so that one kernel (and one in the backward) does both.
    # oneDNN's 1x1 convolution is several times faster than a matmul of these skinny shapes on the CPUs
    # we measured, and it writes channels-last or NCHW as its input is laid out.
    normalised = torch.cat([scale.unsqueeze(-1) * weight, shift.unsqueeze(-1)], -1)  # [T, C, D + 1]
    inputs = torch.cat([patches, patches.new_ones(n, tasks, 1, positions)], 2)  # [N, T, D + 1, L]
    if relu_max_pool and height >= 2 and width >= 2 and fused.supported(inputs):
        inputs = inputs.permute(0, 3, 1, 2).reshape(n, height, width, tasks, size + 1)  # one copy
        out = fused.patch_conv_pool(inputs, normalised)  # [N, H/2, W/2, T, C]
        out = out.view(n, height // 2, width // 2, tasks * out_channels).permute(0, 3, 1, 2)
        return (out if channels_last else out.contiguous()), record
    if channels_last:
        inputs = inputs.permute(0, 3, 1, 2).contiguous()  # [N, L, T, D + 1]
        inputs = inputs.view(n, height, width, tasks * (size + 1)).permute(0, 3, 1, 2)
    else:
        inputs = inputs.view(n, tasks * (size + 1), height, width)
    weight_1x1 = normalised.reshape(tasks * out_channels, size + 1, 1, 1)
    then = then or (lambda out: out)
    image_bytes = tasks * out_channels * positions * x.element_size()
    step = max(1, slice_bytes // image_bytes) if slice_bytes else n
    if step >= n:
        return then(F.conv2d(inputs, weight_1x1, groups=tasks)), record
    slices = [then(F.conv2d(inputs[start:start + step], weight_1x1, groups=tasks)) for start in range(0, n, step)]
    return torch.cat(slices), record
