"""The folded multi-task executor: T tasks' forward passes as one computation, each task with its own weights.

The speed backend's way of running :func:`metalab.nn.reference.task_forward` (same function, same
gradients of every order; tests hold it to the reference in float64). The T tasks' images travel
*folded* into the channel dimension, [N, T*C, H, W], so that

* a convolution whose weights differ per task is ONE grouped convolution (groups = T),
* a convolution whose weights are shared (not adapted, e.g. the ANIL body) is one plain convolution
  over the N*T images,
* BatchNorm with per-task batch statistics is ONE batch norm over T*C channels,
* ReLU / pooling / tanh work on the folded tensor unchanged,

and feature vectors travel as [T, N, D] (a per-task linear layer is one batched matmul). Along a
``nn.Sequential`` the executor fuses neighbours: a thin-input convolution + BatchNorm as one matmul of
normalised weights (:mod:`metalab.accel.conv_norm`, with the compiled first-block kernel), BatchNorm +
ReLU + 2x2 max-pool as one compiled kernel (:mod:`metalab.accel.batch_norm_relu_pool`), a monotone
activation after a max-pool's input, and NNPACK's fast 3x3 convolutions where their gradients are taken
once (:mod:`metalab.accel.nnpack_conv`).

Layers are recognised by their type, never networks by their class: a model qualifies when every module
in it is a plain ``nn.Sequential`` or one of the layers below (:func:`supports`); any other model (a
residual block, a custom ``forward``) is run by the reference path instead.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from metalab.accel import batch_norm_relu_pool as fused_norm
from metalab.accel import nnpack_conv
from metalab.accel.conv_norm import conv_batch_norm, foldable
from metalab.accel.pooling import max_pool2d

#: parameter-free layers that act per channel / per element, so they run on the folded layout as they are.
_CHANNELWISE = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Identity,
    nn.MaxPool2d, nn.AvgPool2d, nn.Dropout,
)


#: parameter-free layers that act on each image alone (unlike BatchNorm with batch statistics).
_PER_IMAGE = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Identity,
    nn.MaxPool2d, nn.AvgPool2d,
)
#: a folded first layer and the per-image layers after it run on slices of images whose output is
#: about this size, so that their widest activation and its gradient never exist whole.
SLICE_BYTES = 4 << 20


@dataclass
class ForwardSettings:
    """How :func:`task_forward` runs the network.

    ``statistics``: "batch" (normalise with the statistics of the current set) or "running" (the
    module's running estimates). ``record``: when a dict, the per-layer batch statistics (averaged
    over tasks, detached) are stored in it, to update running estimates. ``checkpoint``: recompute
    each block's activations in the backward pass instead of storing them (same result, less memory).
    """

    statistics: str = "batch"
    record: dict[str, tuple[Tensor, Tensor]] | None = None
    checkpoint: bool = False
    channels_last: bool = False
    precision: str = "fp32"
    #: run a thin-input convolution + BatchNorm (Conv-4's first layer) as one 1x1 convolution of its
    #: patches with normalised weights (:mod:`metalab.accel.conv_norm`): the same function, computed
    #: faster. Not under bf16.
    fold_conv_norm: bool = True
    #: metalab's compiled CPU kernels (built on first use, the PyTorch path where they cannot be): a folded
    #: first layer's ReLU + 2x2 max-pool with it (:mod:`metalab.accel.patch_conv_pool`) and BatchNorm + ReLU +
    #: 2x2 max-pool (:mod:`metalab.accel.batch_norm_relu_pool`).
    native_kernels: bool = True
    #: the gradients of this forward are taken once, never differentiated again (a query pass, a
    #: first-order inner loop, evaluation). Where they are differentiated again (a second-order inner
    #: loop), the BatchNorm + ReLU + max-pool kernel runs on maps of every size: its double backward
    #: replaces a dozen of PyTorch's calls; otherwise only on maps of ``MIN_BYTES`` or more.
    once_differentiable: bool = False
    #: in forwards differentiated once, 3x3 convolutions of large enough maps and batches by NNPACK's
    #: fast-transform kernels, forward and both gradients (:mod:`metalab.accel.nnpack_conv`): fewer
    #: multiplications, results that differ from oneDNN's direct convolution by float32 rounding (relative
    #: ~1e-6-1e-5). None: on AVX2 CPUs for large batches only (:func:`metalab.accel.nnpack_conv.pays_by_default`).
    winograd: bool | None = None


#: a convolution's (stride, padding, dilation), as ``nn.Conv2d`` holds them
_ConvArgs = tuple[tuple[int, ...], str | tuple[int, ...], tuple[int, ...]]


@dataclass
class _State:
    params: Mapping[str, Tensor]
    buffers: Mapping[str, Tensor]
    tasks: int
    settings: ForwardSettings


# ------------------------------------------------------------------------------------------ layouts
def fold(x: Tensor, channels_last: bool = False) -> Tensor:
    """Task-batched inputs [T, N, ...] -> the layout :func:`task_forward` runs on.

    Images [T, N, C, H, W] -> [N, T*C, H, W]; vectors [T, N, D] stay as they are.
    """
    if x.dim() == 5:
        tasks, n, c, h, w = x.shape
        folded = x.transpose(0, 1).reshape(n, tasks * c, h, w)
        return folded.contiguous(memory_format=torch.channels_last) if channels_last else folded
    if x.dim() == 3:
        return x
    raise ValueError(f"task-batched inputs must be [T, N, C, H, W] images or [T, N, D] vectors, "
                     f"got shape {tuple(x.shape)}")


def unfold(y: Tensor, tasks: int) -> Tensor:
    """Outputs back to [T, N, ...]: [N, T*C, H, W] -> [T, N, C, H, W]; [T, N, D] unchanged."""
    if y.dim() == 4:
        n, tc, h, w = y.shape
        return y.reshape(n, tasks, tc // tasks, h, w).transpose(0, 1)
    return y


def _flatten_images(x: Tensor, tasks: int) -> Tensor:
    """[N, T*C, H, W] -> [T, N, C*H*W] (the order of ``Tensor.flatten(1)`` on each task's [N, C, H, W])."""
    n, tc, h, w = x.shape
    return x.reshape(n, tasks, tc // tasks * h * w).transpose(0, 1)


# ------------------------------------------------------------------------------------------ layers
def _param(state: _State, name: str) -> Tensor | None:
    return state.params.get(name)


def _conv2d(module: nn.Conv2d, prefix: str, x: Tensor, state: _State) -> Tensor:
    weight, bias = state.params[prefix + "weight"], _param(state, prefix + "bias")
    tasks = state.tasks
    args = (module.stride, module.padding, module.dilation)
    n = x.shape[0]
    if weight.dim() == 4 and (bias is None or bias.dim() == 1):
        # shared weights: one plain convolution over the N*T images ([N, T*C] is [N*T, C] in memory).
        c = x.shape[1] // tasks
        out = _convolve(x.reshape(n * tasks, c, *x.shape[2:]), weight, bias, args, module.groups, state)
        return _keep_layout(out.reshape(n, -1, *out.shape[2:]), state)
    if weight.dim() == 4:  # shared weight, per-task bias (or channels-last input): repeat for the grouped kernel
        weight = weight.unsqueeze(0).expand(tasks, *weight.shape)
    if bias is not None and bias.dim() == 1:
        bias = bias.unsqueeze(0).expand(tasks, *bias.shape)
    weight = weight.reshape(-1, *weight.shape[2:])
    bias = None if bias is None else bias.reshape(-1)
    return _keep_layout(_convolve(x, weight, bias, args, tasks * module.groups, state), state)


def _convolve(x: Tensor, weight: Tensor, bias: Tensor | None, args: _ConvArgs, groups: int, state: _State) -> Tensor:
    """``F.conv2d``, or NNPACK's Winograd kernels where they pay and the gradients are taken once
    (:func:`metalab.accel.nnpack_conv.conv3x3`)."""
    settings = state.settings
    if (settings.winograd is not False and settings.once_differentiable and settings.precision == "fp32"
            and nnpack_conv.supported(x, weight, *args, groups)
            and (settings.winograd or nnpack_conv.pays_by_default(x))):
        return nnpack_conv.conv3x3(x, weight, bias)
    stride, padding, dilation = args
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _keep_layout(out: Tensor, state: _State) -> Tensor:
    """Channels-last output when asked for: a convolution of a 1-channel input returns the default
    layout, and the pooling and batch norm that follow are far slower on it."""
    return out.contiguous(memory_format=torch.channels_last) if state.settings.channels_last else out


def _linear(module: nn.Linear, prefix: str, x: Tensor, state: _State) -> Tensor:
    weight, bias = state.params[prefix + "weight"], _param(state, prefix + "bias")
    if weight.dim() == 2 and (bias is None or bias.dim() == 1):
        return F.linear(x, weight, bias)
    if weight.dim() == 2:
        weight = weight.unsqueeze(0).expand(state.tasks, *weight.shape)
    out = torch.bmm(x, weight.transpose(1, 2))  # [T, N, D] @ [T, D, O]
    return out if bias is None else out + bias.reshape(-1, 1, bias.shape[-1])


def _per_channel(value: Tensor | None, tasks: int) -> Tensor | None:
    """A BatchNorm affine parameter [C] (shared) or [T, C] (per task) as [T*C]."""
    if value is None:
        return None
    return value.repeat(tasks) if value.dim() == 1 else value.reshape(-1)


def _batch_norm(module: nn.modules.batchnorm._BatchNorm, prefix: str, x: Tensor, state: _State) -> Tensor:
    tasks = state.tasks
    weight = _per_channel(_param(state, prefix + "weight"), tasks)
    bias = _per_channel(_param(state, prefix + "bias"), tasks)
    vectors = x.dim() == 3  # [T, N, D] -> [N, T*D] so that one batch norm covers every task
    if vectors:
        n = x.shape[1]
        x = x.transpose(0, 1).reshape(n, -1)
    if state.settings.statistics == "running":
        mean, var = state.buffers.get(prefix + "running_mean"), state.buffers.get(prefix + "running_var")
        if mean is None or var is None:
            raise ValueError(f"bn_mode 'running' needs running statistics, but BatchNorm {prefix[:-1]!r} "
                             f"was built with track_running_stats=False; use bn_mode: transductive")
        out = F.batch_norm(x, mean.repeat(tasks), var.repeat(tasks), weight, bias, False, 0.0, module.eps)
    else:
        if state.settings.record is not None:
            _record_statistics(x, tasks, prefix, state.settings.record)
        out = F.batch_norm(x, None, None, weight, bias, True, 0.0, module.eps)
    if vectors:
        out = out.reshape(out.shape[0], tasks, -1).transpose(0, 1)
    return out


@torch.no_grad()
def _record_statistics(x: Tensor, tasks: int, prefix: str, record: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Per-channel batch mean and unbiased variance of folded ``x``, averaged over the tasks."""
    dims = [0] + list(range(2, x.dim()))
    x = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 activations: float32 statistics
    _record_task_average(x.mean(dims), x.var(dims, unbiased=True), tasks, prefix, record)


def _record_task_average(mean: Tensor, var: Tensor, tasks: int, prefix: str,
                         record: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Store per-channel statistics of the folded channels [T*C] as their average over the tasks [C] (float32)."""
    dtype = torch.promote_types(mean.dtype, torch.float32)
    record[prefix] = (mean.view(tasks, -1).mean(0).to(dtype), var.view(tasks, -1).mean(0).to(dtype))


def _run(module: nn.Module, prefix: str, x: Tensor, state: _State) -> Tensor:
    """Run ``module`` on folded ``x`` with the state's parameters (by qualified name)."""
    if _is_plain_sequential(module):
        children = list(module.named_children())
        index = 0
        while index < len(children):
            name, child = children[index]
            if index + 1 < len(children) and _folds_with_norm(child, children[index + 1][1], state):
                next_name, norm = children[index + 1]
                # the per-image layers after it run on slices of the images, with it (metalab/accel/conv_norm.py)
                following = list(itertools.takewhile(lambda item: isinstance(item[1], _PER_IMAGE),
                                                     children[index + 2:]))
                then = None
                relu_max_pool = state.settings.native_kernels and _is_relu_and_max_pool([m for _, m in following])
                if following:
                    layers = nn.Sequential(OrderedDict(following))

                    def then(out: Tensor, layers: nn.Sequential = layers) -> Tensor:
                        return _run(layers, prefix, out, state)
                x = _run_conv_norm(cast(nn.Conv2d, child), cast(nn.BatchNorm2d, norm),  # foldable() checked them
                                   f"{prefix}{name}.", f"{prefix}{next_name}.", then, relu_max_pool, x, state)
                index += 2 + len(following)
                continue
            if index + 2 < len(children) and _fuses_norm_relu_pool(child,
                                                                   [children[index + 1][1], children[index + 2][1]],
                                                                    x, state):
                batch_norm = cast(nn.BatchNorm2d, child)  # _fuses_norm_relu_pool() checked it
                x = _batch_norm_relu_pool(batch_norm, f"{prefix}{name}.", x, state)
                index += 3
                continue
            if index + 1 < len(children) and _commutes_with_max_pool(child, children[index + 1][1]):
                # pool first: max(f(x)) = f(max(x)) for a non-decreasing f, so f runs on 1/4 of the values.
                next_name, pool = children[index + 1]
                x = _run_child(child, f"{prefix}{name}.", _run_child(pool, f"{prefix}{next_name}.", x, state), state)
                index += 2
                continue
            x = _run_child(child, f"{prefix}{name}.", x, state)
            index += 1
        return x
    if isinstance(module, nn.Conv2d):
        return _conv2d(module, prefix, x, state)
    if isinstance(module, nn.Linear):
        return _linear(module, prefix, x, state)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _batch_norm(module, prefix, x, state)
    if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
        return _flatten_images(x, state.tasks) if x.dim() == 4 else x
    if isinstance(module, nn.MaxPool2d) and not module.return_indices and x.dim() == 4:
        return max_pool2d(x, module)  # same values and gradients; a large input is not kept for the backward
    if isinstance(module, _CHANNELWISE):
        return module(x)
    raise TypeError(f"the folded executor has no rule for {prefix[:-1]!r} ({type(module).__name__}); "
                    f"check supports(module) first")


def _folds_with_norm(conv: nn.Module, norm: nn.Module, state: _State) -> bool:
    return state.settings.fold_conv_norm and state.settings.precision == "fp32" and foldable(conv, norm)


def _run_conv_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d, conv_prefix: str, norm_prefix: str,
                   then: Callable[[Tensor], Tensor] | None, relu_max_pool: bool, x: Tensor,
                   state: _State) -> Tensor:
    """A foldable convolution + BatchNorm pair as one 1x1 convolution, followed by ``then`` (per-image
    layers), in slices of :data:`SLICE_BYTES` (:func:`metalab.accel.conv_norm.conv_batch_norm`)."""
    params = {"weight": _param(state, conv_prefix + "weight"), "bias": _param(state, conv_prefix + "bias"),
              "norm_weight": _param(state, norm_prefix + "weight"), "norm_bias": _param(state, norm_prefix + "bias")}
    statistics = state.settings.statistics
    running: tuple[Tensor, Tensor] | None = None
    if statistics == "running":
        mean, var = state.buffers.get(norm_prefix + "running_mean"), state.buffers.get(norm_prefix + "running_var")
        if mean is None or var is None:
            raise ValueError(f"bn_mode 'running' needs running statistics, but BatchNorm {norm_prefix[:-1]!r} "
                             f"was built with track_running_stats=False; use bn_mode: transductive")
        running = (mean, var)

    def run(x: Tensor) -> Tensor:
        out, batch_statistics = conv_batch_norm(conv, norm, x, state.tasks, params, statistics, running,
                                                state.settings.channels_last, then, SLICE_BYTES, relu_max_pool)
        if state.settings.record is not None and batch_statistics is not None:
            state.settings.record[norm_prefix] = batch_statistics
        return out

    if state.settings.checkpoint:
        return activation_checkpoint(run, x, use_reentrant=False)
    return run(x)


def _fuses_norm_relu_pool(norm: nn.Module, following: list[nn.Module], x: Tensor, state: _State) -> bool:
    """BatchNorm2d with batch statistics, then ReLU and a 2x2 max-pool, where the compiled kernel pays
    (:func:`metalab.accel.batch_norm_relu_pool.batch_norm_relu_pool`): maps of every size in a forward that
    is differentiated twice, large ones otherwise."""
    settings = state.settings
    return (isinstance(norm, nn.BatchNorm2d) and settings.native_kernels and settings.statistics == "batch"
            and not settings.checkpoint and settings.precision == "fp32" and _is_relu_and_max_pool(following)
            and fused_norm.supported(x, any_size=not settings.once_differentiable))


def _batch_norm_relu_pool(norm: nn.BatchNorm2d, prefix: str, x: Tensor, state: _State) -> Tensor:
    tasks = state.tasks
    weight = _per_channel(_param(state, prefix + "weight"), tasks)
    bias = _per_channel(_param(state, prefix + "bias"), tasks)
    out, mean, var = fused_norm.batch_norm_relu_pool(x, weight, bias, norm.eps)
    if state.settings.record is not None:  # the kernel's variance is the biased one; records keep the unbiased
        count = x.shape[0] * x.shape[2] * x.shape[3]
        _record_task_average(mean, var * count / max(count - 1, 1), tasks, prefix, state.settings.record)
    return out


def _is_relu_and_max_pool(layers: list[nn.Module]) -> bool:
    """True for [ReLU, 2x2 max-pool of stride 2] in either order (the same function): the layers that the
    compiled kernels fuse with a folded first layer (:func:`metalab.accel.patch_conv_pool.patch_conv_pool`)
    or with a BatchNorm (:func:`metalab.accel.batch_norm_relu_pool.batch_norm_relu_pool`)."""
    if len(layers) != 2:
        return False
    pools = [layer for layer in layers if isinstance(layer, nn.MaxPool2d)]
    if not pools or not any(type(layer) is nn.ReLU for layer in layers):
        return False
    pool, pair = pools[0], nn.modules.utils._pair
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return (pair(pool.kernel_size) == (2, 2) and pair(stride) == (2, 2) and pair(pool.padding) == (0, 0)
            and pair(pool.dilation) == (1, 1) and not pool.return_indices and not pool.ceil_mode)


def _commutes_with_max_pool(activation: nn.Module, following: nn.Module) -> bool:
    """True for a non-decreasing elementwise activation followed by a max-pool that returns no indices.

    Then pool(f(x)) = f(pool(x)) value for value, and the gradients agree wherever the maximum of a
    window is unique (ties only occur where ReLU's gradient is zero anyway).
    """
    if not isinstance(following, nn.MaxPool2d) or following.return_indices:
        return False
    if isinstance(activation, nn.LeakyReLU):
        return activation.negative_slope >= 0
    return isinstance(activation, (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.ELU))


def _run_child(child: nn.Module, prefix: str, x: Tensor, state: _State) -> Tensor:
    """One child of a Sequential, optionally as a checkpointed (recomputed) block."""
    if not state.settings.checkpoint or not any(True for _ in child.parameters()):
        return _run(child, prefix, x, state)
    return activation_checkpoint(_run, child, prefix, x, state, use_reentrant=False)


def _is_plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` (or a subclass) whose forward is Sequential's: children one after the other."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


#: layers with a folded rule, by exact type (a subclass may compute something else)
_RULES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, *_CHANNELWISE)


def _has_rule(module: nn.Module) -> bool:
    """Whether :func:`_run` computes ``module`` exactly as its own forward would, on the folded layout."""
    if type(module) not in _RULES:
        return False
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros"
    if isinstance(module, nn.Flatten):
        return module.start_dim == 1 and module.end_dim == -1
    if isinstance(module, nn.MaxPool2d):
        return not module.return_indices
    if isinstance(module, nn.Dropout):
        return module.p == 0 or not module.training  # a random mask would differ from the reference's
    return True


def supports(module: nn.Module) -> bool:
    """True when every module of ``module``'s tree is a plain ``nn.Sequential`` or a layer with a folded rule."""
    return all(_is_plain_sequential(m) or _has_rule(m) for m in module.modules())


def task_forward(module: nn.Module, params: Mapping[str, Tensor], x: Tensor, settings: ForwardSettings) -> Tensor:
    """Run ``module`` on T tasks at once, each task with its own parameters (``supports(module)`` must hold).

    Args:
        module: the network (its own parameters are not used, its buffers are).
        params: every parameter of ``module`` by qualified name; per-task ones carry a leading task
            dimension [T, ...] (their shape tells), shared ones have the module's own shape.
        x: inputs [T, N, C, H, W] or [T, N, D].
        settings: BatchNorm statistics and the execution devices to use.
    Returns:
        outputs [T, N, ...] (e.g. logits [T, N, ways]).
    """
    state = _State(params, dict(module.named_buffers()), x.shape[0], settings)
    return unfold(_run(module, "", fold(x, settings.channels_last), state), x.shape[0])
