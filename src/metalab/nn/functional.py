"""The one functional inner loop of the gradient-based learners (MAML, FOMAML, Reptile, ANIL, Meta-SGD).

An unmodified ``nn.Module`` is run with parameters given as tensors, one set per task, so that a
meta-batch of T tasks adapts in one computation and the meta-parameters stay leaves of the graph:
no deep copies, no monkey-patching, no "meta layers".

How a meta-batch runs (:func:`task_forward`): the T tasks' images travel *folded* into the channel
dimension, [N, T*C, H, W], so that

* a convolution whose weights differ per task is ONE grouped convolution (groups = T),
* a convolution whose weights are shared (not adapted, e.g. the ANIL body) is one plain convolution
  over the N*T images,
* BatchNorm with per-task batch statistics is ONE batch norm over T*C channels,
* ReLU / pooling / tanh work on the folded tensor unchanged,

and feature vectors travel as [T, N, D] (a per-task linear layer is one batched matmul). Layer types
without such a rule run through ``torch.func.functional_call`` task by task, so any module works;
the rules are only a faster way to compute the same thing (tests compare against ``higher``).

BatchNorm semantics are explicit (``bn_mode``):

* ``transductive``: every forward normalises with the statistics of the set it is given (support
  with support statistics, queries with query statistics), in training and evaluation (MAML paper).
* ``running``: meta-training normalises with batch statistics and updates running estimates from the
  queries at the adapted weights; evaluation normalises support and queries with the running
  estimates, so no prediction depends on another query.

The inner loop (:func:`inner_loop`) takes plain gradient steps with ``torch.autograd.grad``:
``create_graph=True`` for second order, detached gradients for first order; learning rates are a
float, or tensors (one per parameter tensor or per element: Meta-SGD) that receive meta-gradients.
"""
from __future__ import annotations

import functools
import itertools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from metalab.nn import batch_norm_relu_pool as fused_norm
from metalab.nn import nnpack_conv
from metalab.nn.backbones import MLP, Conv4
from metalab.nn.checkpointed_unroll import checkpointed_inner_loop
from metalab.nn.conv_norm import conv_batch_norm, foldable
from metalab.nn.pooling import max_pool2d

BN_MODES = ("transductive", "running")
PRECISIONS = ("fp32", "bf16")

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
    #: patches with normalised weights (:mod:`metalab.nn.conv_norm`): the same function, computed
    #: faster. Not under bf16.
    fold_conv_norm: bool = True
    #: metalab's compiled CPU kernels (built on first use, the PyTorch path where they cannot be): a folded
    #: first layer's ReLU + 2x2 max-pool with it (:mod:`metalab.nn.patch_conv_pool`) and BatchNorm + ReLU +
    #: 2x2 max-pool (:mod:`metalab.nn.batch_norm_relu_pool`).
    native_kernels: bool = True
    #: the gradients of this forward are taken once, never differentiated again (a query pass, a
    #: first-order inner loop, evaluation). Where they are differentiated again (a second-order inner
    #: loop), the BatchNorm + ReLU + max-pool kernel runs on maps of every size: its double backward
    #: replaces a dozen of PyTorch's calls; otherwise only on maps of ``MIN_BYTES`` or more.
    once_differentiable: bool = False
    #: in forwards differentiated once, 3x3 convolutions of large enough maps and batches by NNPACK's
    #: fast-transform kernels, forward and both gradients (:mod:`metalab.nn.nnpack_conv`): fewer
    #: multiplications, results that differ from oneDNN's direct convolution by float32 rounding (relative
    #: ~1e-6-1e-5). None: on AVX2 CPUs for large batches only (:func:`metalab.nn.nnpack_conv.pays_by_default`).
    winograd: bool | None = None


@dataclass
class _State:
    params: Mapping[str, Tensor]
    buffers: Mapping[str, Tensor]
    per_task: frozenset[str]
    tasks: int
    settings: ForwardSettings
    names: dict[int, str] = field(default_factory=dict)


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
    raise ValueError(f"task-batched inputs must be [T, N, C, H, W] images or [T, N, D] vectors, got shape {tuple(x.shape)}")


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
    if module.padding_mode != "zeros":
        return _per_task_call(module, prefix, x, state)
    weight, bias = _param(state, prefix + "weight"), _param(state, prefix + "bias")
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


def _convolve(x: Tensor, weight: Tensor, bias: Tensor | None, args: tuple, groups: int, state: _State) -> Tensor:
    """``F.conv2d``, or NNPACK's Winograd kernels where they pay and the gradients are taken once
    (:func:`metalab.nn.nnpack_conv.conv3x3`)."""
    settings = state.settings
    if (settings.winograd is not False and settings.once_differentiable and settings.precision == "fp32"
            and nnpack_conv.supported(x, weight, *args, groups)
            and (settings.winograd or nnpack_conv.pays_by_default(x))):
        return nnpack_conv.conv3x3(x, weight, bias)
    return F.conv2d(x, weight, bias, *args, groups)


def _keep_layout(out: Tensor, state: _State) -> Tensor:
    """Channels-last output when asked for: a convolution of a 1-channel input returns the default
    layout, and the pooling and batch norm that follow are ~10x slower on it."""
    return out.contiguous(memory_format=torch.channels_last) if state.settings.channels_last else out


def _linear(module: nn.Linear, prefix: str, x: Tensor, state: _State) -> Tensor:
    weight, bias = _param(state, prefix + "weight"), _param(state, prefix + "bias")
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
        if mean is None:
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
    x = x.float()
    _record_task_average(x.mean(dims), x.var(dims, unbiased=True), tasks, prefix, record)


def _record_task_average(mean: Tensor, var: Tensor, tasks: int, prefix: str,
                         record: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Store per-channel statistics of the folded channels [T*C] as their average over the tasks [C] (float32)."""
    record[prefix] = (mean.view(tasks, -1).mean(0).float(), var.view(tasks, -1).mean(0).float())


def _per_task_call(module: nn.Module, prefix: str, x: Tensor, state: _State) -> Tensor:
    """Fallback for layers without a folded rule: ``functional_call`` on each task's slice."""
    tasks = state.tasks
    local = {name: value for name, value in state.params.items() if name.startswith(prefix)}
    local.update({name: value for name, value in state.buffers.items() if name.startswith(prefix)})
    outputs = []
    for t in range(tasks):
        x_t = unfold(x, tasks)[t]
        values = {
            name[len(prefix):]: (value[t] if name in state.per_task else value) for name, value in local.items()
        }
        outputs.append(functional_call(module, values, (x_t,)))
    if outputs[0].dim() == 4:
        return fold(torch.stack(outputs), channels_last=state.settings.channels_last)
    if outputs[0].dim() == 2:
        return torch.stack(outputs)
    raise ValueError(f"layer {prefix[:-1]!r} ({type(module).__name__}) returns shape {tuple(outputs[0].shape)}; "
                     f"task_forward supports layers returning [N, C, H, W] or [N, D]")


def _run(module: nn.Module, prefix: str, x: Tensor, state: _State) -> Tensor:
    """Run ``module`` on folded ``x`` with the state's parameters (by qualified name)."""
    if isinstance(module, nn.Sequential):
        children = list(module.named_children())
        index = 0
        while index < len(children):
            name, child = children[index]
            if index + 1 < len(children) and _folds_with_norm(child, children[index + 1][1], state):
                next_name, norm = children[index + 1]
                # the per-image layers after it run on slices of the images, with it (metalab/nn/conv_norm.py)
                following = list(itertools.takewhile(lambda item: isinstance(item[1], _PER_IMAGE), children[index + 2:]))
                then = None
                relu_max_pool = state.settings.native_kernels and _is_relu_and_max_pool([m for _, m in following])
                if following:
                    layers = nn.Sequential(OrderedDict(following))

                    def then(out: Tensor, layers: nn.Sequential = layers) -> Tensor:
                        return _run(layers, prefix, out, state)
                x = _run_conv_norm(child, norm, f"{prefix}{name}.", f"{prefix}{next_name}.", then, relu_max_pool,
                                   x, state)
                index += 2 + len(following)
                continue
            if index + 2 < len(children) and _fuses_norm_relu_pool(child, [children[index + 1][1], children[index + 2][1]],
                                                                    x, state):
                x = _batch_norm_relu_pool(child, f"{prefix}{name}.", x, state)
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
    if isinstance(module, Conv4):
        x = _run(module.blocks, prefix + "blocks.", x, state)
        return _flatten_images(x, state.tasks) if module.flatten and x.dim() == 4 else x
    if isinstance(module, MLP):
        return _run(module.net, prefix + "net.", x, state)
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
        if isinstance(module, nn.Dropout) and module.p > 0 and module.training:
            return _per_task_call(module, prefix, x, state)
        return module(x)
    return _per_task_call(module, prefix, x, state)


def _folds_with_norm(conv: nn.Module, norm: nn.Module, state: _State) -> bool:
    return state.settings.fold_conv_norm and state.settings.precision == "fp32" and foldable(conv, norm)


def _run_conv_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d, conv_prefix: str, norm_prefix: str,
                   then: Callable[[Tensor], Tensor] | None, relu_max_pool: bool, x: Tensor,
                   state: _State) -> Tensor:
    """A foldable convolution + BatchNorm pair as one 1x1 convolution, followed by ``then`` (per-image
    layers), in slices of :data:`SLICE_BYTES` (:func:`metalab.nn.conv_norm.conv_batch_norm`)."""
    params = {"weight": _param(state, conv_prefix + "weight"), "bias": _param(state, conv_prefix + "bias"),
              "norm_weight": _param(state, norm_prefix + "weight"), "norm_bias": _param(state, norm_prefix + "bias")}
    statistics = state.settings.statistics
    running = None
    if statistics == "running":
        running = (state.buffers.get(norm_prefix + "running_mean"), state.buffers.get(norm_prefix + "running_var"))
        if running[0] is None:
            raise ValueError(f"bn_mode 'running' needs running statistics, but BatchNorm {norm_prefix[:-1]!r} "
                             f"was built with track_running_stats=False; use bn_mode: transductive")

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
    (:func:`metalab.nn.batch_norm_relu_pool.batch_norm_relu_pool`): maps of every size in a forward that
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
    compiled kernels fuse with a folded first layer (:func:`metalab.nn.patch_conv_pool.patch_conv_pool`)
    or with a BatchNorm (:func:`metalab.nn.batch_norm_relu_pool.batch_norm_relu_pool`)."""
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


def task_forward(
    module: nn.Module,
    params: Mapping[str, Tensor],
    x: Tensor,
    per_task: Iterable[str] = (),
    settings: ForwardSettings | None = None,
) -> Tensor:
    """Run ``module`` on T tasks at once, each task with its own parameters.

    Args:
        module: an ordinary ``nn.Module`` (its own parameters are not used, its buffers are).
        params: every parameter of ``module`` by qualified name; the names in ``per_task`` carry a
            leading task dimension [T, ...], the others are shared by all tasks.
        x: inputs [T, N, C, H, W] or [T, N, D].
        settings: BatchNorm statistics, checkpointing, memory format, precision.
    Returns:
        outputs [T, N, ...] (e.g. logits [T, N, ways]).
    """
    settings = settings or ForwardSettings()
    if settings.statistics not in ("batch", "running"):
        raise ValueError(f"statistics must be 'batch' or 'running', got {settings.statistics!r}")
    state = _State(params, dict(module.named_buffers()), frozenset(per_task), x.shape[0], settings)
    if settings.precision == "bf16" and x.device.type == "cpu":
        warn_if_cpu_lacks_bf16()
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if settings.precision == "bf16" else nullcontext()
    with autocast:
        out = unfold(_run(module, "", fold(x, settings.channels_last), state), x.shape[0])
    return out.to(x.dtype) if settings.precision == "bf16" else out


@functools.cache
def warn_if_cpu_lacks_bf16() -> None:
    """Warn once: without AVX512-BF16 or AMX, CPU bf16 kernels are emulated (measured 6x slower than fp32)."""
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        warnings.warn(
            f"precision=bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX; this one has "
            f"{torch.backends.cpu.get_cpu_capability()}): bf16 is emulated here and runs several times slower than "
            f"fp32 (a MAML meta-iteration: 28 s vs 4.6 s in benchmarks/speed). Use learner.precision=fp32 on this machine.",
            stacklevel=3)


@torch.no_grad()
def update_running_statistics(module: nn.Module, record: Mapping[str, tuple[Tensor, Tensor]]) -> None:
    """Move the running estimates of ``module``'s BatchNorm layers toward recorded batch statistics."""
    for name, layer in module.named_modules():
        prefix = f"{name}." if name else ""
        if prefix not in record or not isinstance(layer, nn.modules.batchnorm._BatchNorm):
            continue
        if layer.running_mean is None:
            continue
        mean, var = record[prefix]
        momentum = layer.momentum if layer.momentum is not None else 1.0 / float(layer.num_batches_tracked + 1)
        layer.running_mean.lerp_(mean.to(layer.running_mean.dtype), momentum)
        layer.running_var.lerp_(var.to(layer.running_var.dtype), momentum)
        layer.num_batches_tracked += 1


# -------------------------------------------------------------------------------------- inner loop
LossFn = Callable[[Tensor, Tensor], Tensor]


def classification_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-task mean cross-entropy: logits [T, N, W], labels [T, N] -> [T]."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits -> fp32 loss
    losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return losses.view(labels.shape).mean(1)


def regression_losses(predictions: Tensor, targets: Tensor) -> Tensor:
    """Per-task mean squared error: predictions and targets [T, N, D] -> [T]."""
    return (predictions.to(targets.dtype) - targets).pow(2).flatten(1).mean(1)


@dataclass
class InnerLoop:
    """What one task's adaptation does; the learners combine these options.

    Attributes:
        steps: gradient steps on the support set.
        lr: the inner learning rate (a float), unless per-parameter rates are passed to :func:`inner_loop`.
        first_order: drop the second-order terms (the inner gradients are constants of the meta-graph).
        bn_mode: "transductive" or "running" (see the module docstring).
        checkpoint: recompute activations in the meta-backward instead of storing them (second order:
            trades time for memory, same result).
        channels_last: run convolutions in the channels-last memory format.
        inner_channels_last: the layout of the inner loop's forward passes when it should differ from
            the query pass's (None = ``channels_last``); the result is the same either way.
        precision: "fp32" or "bf16" (bf16 autocast of the forward passes; the update is kept in fp32).
        optimizer: "sgd" (plain gradient steps) or "adam" (Reptile's inner Adam; its moments start from zero
            for every task unless :func:`inner_loop` is given an :class:`AdamState` to go on from).
        betas, eps: Adam's (Reptile uses beta1 = 0).
        minibatch: support examples per step (0 = the whole support set); batches follow a random
            permutation of the support set, redrawn after every pass (Reptile).
        fold_conv_norm: run thin-input convolution + BatchNorm pairs as one 1x1 convolution of their
            patches (same result).
        native_kernels: metalab's compiled CPU kernels where they build (same result): a folded first
            layer with its ReLU + 2x2 max-pool (:mod:`metalab.nn.patch_conv_pool`), and BatchNorm + ReLU +
            max-pool (:mod:`metalab.nn.batch_norm_relu_pool`), twice differentiable.
        winograd: where a forward's gradients are taken once (the query pass, a first-order inner loop),
            3x3 convolutions of 12x12-14x14 maps and 16+ images by NNPACK's fast-transform kernels
            (:mod:`metalab.nn.nnpack_conv`; float32 rounding differs from the direct convolution's); None
            (default): on AVX2 CPUs for batches of 150+ images (:func:`metalab.nn.nnpack_conv.pays_by_default`:
            NNPACK's workspaces cost ~30 MB whatever the batch).
        checkpoint_inner_loop: second order: keep only each step's parameters and recompute one step's graph at
            a time in the meta-backward (:mod:`metalab.nn.checkpointed_unroll`): memory of one inner step's
            graph instead of all of them, for one more forward+backward of the support set per step but the
            last; same meta-gradient. Plain gradient steps only (not Reptile's inner Adam).
        grad_clip: the largest L2 norm of one task's inner gradient over its adapted parameters (0 = no limit);
            a longer gradient is scaled down to it before the step (or before it enters Adam's moments), as
            ``torch.nn.utils.clip_grad_norm_`` would on that task alone. It bounds a plain SGD step at
            ``lr * grad_clip``, so a task whose curvature outruns the inner learning rate cannot diverge.
    """

    steps: int = 1
    lr: float = 0.4
    first_order: bool = False
    bn_mode: str = "transductive"
    checkpoint: bool = False
    channels_last: bool = False
    inner_channels_last: bool | None = None
    precision: str = "fp32"
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.0, 0.999)
    eps: float = 1e-8
    minibatch: int = 0
    fold_conv_norm: bool = True
    native_kernels: bool = True
    winograd: bool | None = None
    checkpoint_inner_loop: bool = False
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {self.bn_mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.steps < 0:
            raise ValueError(f"inner steps must be >= 0, got {self.steps}")
        if not self.grad_clip >= 0:
            raise ValueError(f"the inner gradient clip must be >= 0 (0 = no limit), got {self.grad_clip}")

    def settings(self, training: bool, record: dict | None = None, inner: bool = False,
                 create_graph: bool | None = None) -> ForwardSettings:
        """Forward settings for meta-training (``training``) or evaluation.

        ``inner``: a forward inside the inner loop. Its activations are never recomputed block by block
        (the double backward needs them; ``checkpoint_inner_loop`` recomputes whole steps instead); the
        query forward, which holds most of the activations, is. ``create_graph``: whether the inner loop keeps the
        graph of its gradients (default: second order).
        """
        statistics = "running" if (self.bn_mode == "running" and not training) else "batch"
        checkpoint = self.checkpoint and training and not inner
        channels_last = self.channels_last
        if inner and self.inner_channels_last is not None:
            channels_last = self.inner_channels_last
        if create_graph is None:
            create_graph = not self.first_order
        # only an inner loop that keeps its gradients' graph differentiates its forward's gradients again
        once = not (inner and create_graph)
        return ForwardSettings(statistics, record, checkpoint, channels_last, self.precision, self.fold_conv_norm,
                               self.native_kernels, once, self.winograd)


@dataclass
class AdamState:
    """The inner Adam's moments by adapted parameter name and the Adam steps taken so far.

    Given to :func:`inner_loop`, the loop starts from these moments (each broadcastable to the adapted
    parameter's [T, ...]; a name without moments starts from zero) and continues Adam's bias correction
    from ``steps``; on return the object holds the moments the T tasks ended with, [T, ...] each, and
    ``steps`` has grown by the steps taken. Empty (the default) is Adam's usual fresh start.
    """

    first: dict[str, Tensor] = field(default_factory=dict)
    second: dict[str, Tensor] = field(default_factory=dict)
    steps: int = 0


def expand_for_tasks(params: Mapping[str, Tensor], names: Iterable[str], tasks: int) -> dict[str, Tensor]:
    """Give ``names`` a leading task dimension (a view: gradients flow back summed to the originals)."""
    chosen = set(names)
    return {n: (p.unsqueeze(0).expand(tasks, *p.shape) if n in chosen else p) for n, p in params.items()}


def inner_loop(
    module: nn.Module,
    params: Mapping[str, Tensor],
    adapted: Iterable[str],
    support_x: Tensor,
    support_y: Tensor,
    loss_fn: LossFn,
    loop: InnerLoop,
    steps: int | None = None,
    lrs: Mapping[str, Tensor] | None = None,
    training: bool = True,
    create_graph: bool | None = None,
    adam_state: AdamState | None = None,
) -> dict[str, Tensor]:
    """Adapt T tasks at once by gradient descent on their support sets.

    Args:
        module: the network (an ordinary ``nn.Module``).
        params: its parameters by name, shared by the tasks (e.g. ``dict(module.named_parameters())``).
        adapted: the names that adapt (all of them for MAML, the head for ANIL); the rest stay shared.
        support_x: [T, S, ...]; support_y: [T, S] labels or [T, S, D] targets.
        loss_fn: per-task losses [T] from outputs [T, S, ...] and targets.
        steps: number of steps (default ``loop.steps``).
        lrs: per-parameter learning rates (Meta-SGD): a tensor broadcastable to each parameter.
        create_graph: keep the graph of the inner gradients (default: not ``loop.first_order``);
            False in evaluation, where no meta-gradient is needed.
        adam_state: with ``loop.optimizer == "adam"``, the moments and step count to start from; updated
            in place to the ones the tasks end with (see :class:`AdamState`). None: a fresh Adam per task.
    Returns:
        the adapted parameters: ``adapted`` names with a leading task dimension [T, ...], others as given.
    """
    adapted = list(adapted)
    tasks = support_x.shape[0]
    steps = loop.steps if steps is None else steps
    create_graph = (not loop.first_order) if create_graph is None else create_graph
    settings = loop.settings(training, inner=True, create_graph=create_graph)
    batches = _minibatches(support_x.shape[1], loop.minibatch, support_x.device)
    indices = [next(batches) if loop.minibatch else None for _ in range(steps)]
    if loop.checkpoint_inner_loop and create_graph and steps > 0:
        if loop.optimizer != "sgd":
            raise ValueError("checkpoint_inner_loop recomputes plain gradient steps; the inner optimizer "
                             f"{loop.optimizer!r} keeps a state across steps: set checkpoint_inner_loop=false")
        step = functools.partial(inner_step, module, adapted=adapted, loss_fn=loss_fn, settings=settings,
                                 lr=loop.lr, grad_clip=loop.grad_clip)
        return checkpointed_inner_loop(step, params, adapted, support_x, support_y, indices, lrs)
    if adam_state is not None and loop.optimizer != "adam":
        raise ValueError(f"an Adam state was given to an inner loop whose optimizer is {loop.optimizer!r}")
    fast = expand_for_tasks(params, adapted, tasks)
    adam, first_step = None, 1
    if loop.optimizer == "adam":
        start = adam_state if adam_state is not None else AdamState()
        adam = {name: tuple(moments[name].expand_as(fast[name]) if name in moments else torch.zeros_like(fast[name])
                            for moments in (start.first, start.second)) for name in adapted}
        first_step = start.steps + 1
    for step, index in enumerate(indices):
        x, y = (support_x, support_y) if index is None else (support_x[:, index], support_y[:, index])
        if adam is None:
            fast = inner_step(module, fast, x, y, adapted=adapted, loss_fn=loss_fn, settings=settings, lr=loop.lr,
                              lrs=lrs, create_graph=create_graph, grad_clip=loop.grad_clip)
            continue
        grads = support_gradients(module, fast, x, y, adapted, loss_fn, settings, create_graph, loop.grad_clip)
        fast = dict(fast)
        for name, grad in zip(adapted, grads):
            rate = loop.lr if lrs is None else lrs[name]
            fast[name] = fast[name] - rate * _adam_direction(adam, name, grad, first_step + step, loop)
    if adam is not None and adam_state is not None:
        adam_state.first = {name: first for name, (first, _) in adam.items()}
        adam_state.second = {name: second for name, (_, second) in adam.items()}
        adam_state.steps += steps
    return fast


def support_gradients(module: nn.Module, fast: Mapping[str, Tensor], x: Tensor, y: Tensor, adapted: list[str],
                       loss_fn: LossFn, settings: ForwardSettings, create_graph: bool,
                       grad_clip: float = 0.0) -> tuple[Tensor, ...]:
    """Gradients of the support losses w.r.t. the ``adapted`` parameters [T, ...] (detached unless create_graph),
    each task's scaled down to L2 norm ``grad_clip`` where it is longer (0: as they are)."""
    outputs = task_forward(module, fast, x, adapted, settings)
    # the sum of per-task losses: its gradient w.r.t. task t's parameters is task t's own gradient.
    loss = loss_fn(outputs, y).sum()
    grads = torch.autograd.grad(loss, [fast[n] for n in adapted], create_graph=create_graph)
    if not create_graph:
        grads = tuple(grad.detach() for grad in grads)
    return clip_task_gradients(grads, grad_clip) if grad_clip > 0 else grads


def task_gradient_norms(grads: Sequence[Tensor]) -> Tensor:
    """Each task's gradient L2 norm [T] over all its tensors [T, ...].

    A norm of per-tensor norms, as ``clip_grad_norm_`` computes it: ``vector_norm``'s backward is 0, not NaN (0/0),
    where a task's gradient is exactly zero.
    """
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grad.flatten(1), dim=1) for grad in grads]),
                                    dim=0)


def clip_task_gradients(grads: Sequence[Tensor], max_norm: float) -> tuple[Tensor, ...]:
    """Scale each task's gradients (tensors [T, ...], one per parameter) to L2 norm <= ``max_norm`` jointly.

    Task t's factor is min(1, max_norm / (norm_t + 1e-6)), ``torch.nn.utils.clip_grad_norm_``'s; it is part of
    the graph, so a second-order meta-gradient differentiates through the clipping too.
    """
    factor = (max_norm / (task_gradient_norms(grads) + 1e-6)).clamp(max=1.0)
    return tuple(grad * factor.view(-1, *([1] * (grad.dim() - 1))) for grad in grads)


def inner_step(module: nn.Module, fast: Mapping[str, Tensor], x: Tensor, y: Tensor, *, adapted: list[str],
               loss_fn: LossFn, settings: ForwardSettings, lr: float, lrs: Mapping[str, Tensor] | None,
               create_graph: bool, grad_clip: float = 0.0) -> dict[str, Tensor]:
    """One plain gradient step of T tasks on support examples x [T, S, ...], y [T, S(, D)].

    ``fast``: parameters by name, ``adapted`` names [T, ...]; returns them after the step,
    theta - rate * grad, with ``rate`` = ``lrs[name]`` (Meta-SGD) or ``lr`` and each task's grad clipped to
    L2 norm ``grad_clip`` (0: not clipped).
    """
    grads = support_gradients(module, fast, x, y, adapted, loss_fn, settings, create_graph, grad_clip)
    stepped = dict(fast)
    for name, grad in zip(adapted, grads):
        # a fixed rate as sub's alpha: one operator (and one backward node) fewer per tensor and step than lr * grad
        stepped[name] = torch.sub(fast[name], grad, alpha=lr) if lrs is None else fast[name] - lrs[name] * grad
    return stepped


def backward_through_adaptation(
    fast: Mapping[str, Tensor],
    adapted: Iterable[str],
    query_loss: Callable[[dict[str, Tensor], int, int], tuple[Tensor, Tensor]],
    tasks: int,
    chunk: int = 1,
) -> Tensor:
    """Back-propagate the query loss at the adapted weights to the meta-parameters, in two stages.

    1. Query stage: for each slice of ``chunk`` tasks, the adapted weights are taken as fresh leaves
       and ``query_loss(params, start, stop)`` (the slice's loss and outputs) is back-propagated:
       a plain first-order forward+backward that yields dL/dtheta'_t (shared, non-adapted
       parameters such as ANIL's body receive their gradient directly).
    2. Adaptation stage: ``torch.autograd.backward(theta', dL/dtheta')`` carries these gradients
       through the inner loop's graph (theta'_t as a function of the meta-parameters and learned rates).

    By the chain rule this equals back-propagating through one joint graph (tests compare it with
    ``higher`` in float64), but the query stage holds one slice's activations at a time and runs
    ordinary (ungrouped) kernels on each task's queries, the cache-sized work the CPU does best.

    Args:
        fast: parameters by name; ``adapted`` names carry a leading task dimension [T, ...].
        query_loss: ``(params, start, stop) -> (loss, outputs)`` for tasks ``start:stop``, where
            ``params`` holds the slice's adapted leaves [stop - start, ...] and the shared parameters.
        tasks: T; chunk: tasks per query stage slice (>= 1).
    Returns:
        the detached query outputs of all tasks, concatenated [T, Q, ...].
    """
    adapted = list(adapted)
    if chunk < 1:
        raise ValueError(f"query chunk must be >= 1 task, got {chunk}")
    grads: dict[str, list[Tensor]] = {name: [] for name in adapted}
    outputs = []
    for start in range(0, tasks, chunk):
        stop = min(start + chunk, tasks)
        leaves = {name: fast[name][start:stop].detach().requires_grad_() for name in adapted}
        loss, slice_outputs = query_loss({**fast, **leaves}, start, stop)
        loss.backward()
        for name, leaf in leaves.items():
            grads[name].append(torch.zeros_like(leaf) if leaf.grad is None else leaf.grad)
        outputs.append(slice_outputs.detach())
    connected = [name for name in adapted if fast[name].requires_grad]
    if connected:
        torch.autograd.backward([fast[name] for name in connected], [torch.cat(grads[name]) for name in connected])
    return torch.cat(outputs)


def merge_records(records: list[tuple[dict[str, tuple[Tensor, Tensor]], int]]) -> dict[str, tuple[Tensor, Tensor]]:
    """Task-weighted mean of the batch statistics recorded by several slices of a meta-batch.

    ``records``: (record, number of tasks in the slice) pairs, as filled by :func:`task_forward`.
    """
    total = sum(count for record, count in records if record)
    merged: dict[str, tuple[Tensor, Tensor]] = {}
    for record, count in records:
        for name, (mean, var) in record.items():
            weight = count / total
            if name in merged:
                merged[name] = (merged[name][0] + weight * mean, merged[name][1] + weight * var)
            else:
                merged[name] = (weight * mean, weight * var)
    return merged


def _adam_direction(state: dict[str, tuple[Tensor, Tensor]], name: str, grad: Tensor, step: int,
                    loop: InnerLoop) -> Tensor:
    """Adam's bias-corrected step direction m_hat / (sqrt(v_hat) + eps); updates the moments in ``state``."""
    beta1, beta2 = loop.betas
    first, second = state[name]
    first = beta1 * first + (1 - beta1) * grad
    second = beta2 * second + (1 - beta2) * grad * grad
    state[name] = (first, second)
    first_hat = first / (1 - beta1 ** step)
    second_hat = second / (1 - beta2 ** step)
    return first_hat / (second_hat.sqrt() + loop.eps)


def _minibatches(size: int, batch: int, device: torch.device):
    """Index tensors of ``batch`` support examples: passes over random permutations (global RNG)."""
    while batch:
        order = torch.randperm(size).to(device)
        for start in range(0, size - batch + 1, batch) if batch <= size else [0]:
            yield order[start:start + batch]
