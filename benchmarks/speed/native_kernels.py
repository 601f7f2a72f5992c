"""metalab's compiled CPU kernels against the PyTorch operations they replace, forward+backward.

    python benchmarks/speed/native_kernels.py [--threads 2] [--repeats 20] [--parts first-block norm convolution]

1. Conv-4's folded first block: ``conv_batch_norm`` (metalab/accel/conv_norm.py) with ReLU and 2x2
   max-pool, on a query set of 75 (5-way) and 300 (20-way) Omniglot images and a 5-image support
   set: the compiled conv+ReLU+pool kernel (``native_kernels``) vs the 1x1 convolution of patches
   followed by PyTorch's max-pool and ReLU, in 4 MiB slices (the path before 2026-12-02).
2. BatchNorm (batch statistics) + ReLU + 2x2 max-pool over channels-last maps of Conv-4's layers
   2-4: ``batch_norm_relu_pool`` vs ``F.batch_norm``, metalab's index-only max-pool and ``F.relu``.
3. The same in the default (NCHW) layout as a second-order inner loop runs it on the support sets:
   forward, backward with ``create_graph`` and the double backward (the gradient of a random
   projection of the input, gamma and beta gradients with respect to the input, gamma and the
   incoming gradient), vs ``F.batch_norm``, ``F.max_pool2d`` and ``F.relu``.
4. A 3x3 convolution (64 -> 64 channels, padding 1) by NNPACK (``metalab.accel.nnpack_conv.conv3x3``,
   as the query pass's second layer runs it with ``learner.winograd``) vs ``F.conv2d`` (oneDNN),
   both on a channels-last map (the query pass's layout): forward, input and weight gradients.
   Whether NNPACK pays depends on the CPU: its kernels are AVX2, oneDNN's use AVX-512 where the CPU
   has it.

Each row: median milliseconds of forward + backward (gradients of every parameter and, for 2. and
3., of the input; for 3. the double backward too), after 3 warm-up calls, in one process. The PyTorch
path's values are checked against the kernel's first.
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from meta_iteration import machine_description, time_calls  # this script's directory is on sys.path
from metalab.accel import native
from metalab.accel.batch_norm_relu_pool import batch_norm_relu_pool
from metalab.accel.conv_norm import conv_batch_norm
from metalab.accel.nnpack_conv import conv3x3
from metalab.accel.pooling import max_pool2d

HIDDEN = 64
PARTS = ("first-block", "norm", "convolution")


def first_block(images: int, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    conv, norm, pool = nn.Conv2d(1, HIDDEN, 3, padding=1), nn.BatchNorm2d(HIDDEN), nn.MaxPool2d(2)
    params = {"weight": conv.weight, "bias": conv.bias, "norm_weight": norm.weight, "norm_bias": norm.bias}
    params = {name: value.detach().clone().requires_grad_() for name, value in params.items()}
    x = torch.rand(images, 1, 28, 28)

    def run(fused: bool):
        out, _ = conv_batch_norm(conv, norm, x, 1, params, "batch", None, True,
                                 lambda y: F.relu(max_pool2d(y, pool)), 4 << 20, relu_max_pool=fused)
        return out

    probe = torch.randn_like(run(True))
    assert torch.allclose(run(True), run(False), atol=1e-5)
    times = []
    for fused in (True, False):
        calls = time_calls(lambda fused=fused: torch.autograd.grad((run(fused) * probe).sum(), list(params.values())),
                           3, repeats)
        times.append(statistics.median(calls) * 1e3)
    return times[0], times[1]


def norm_relu_pool(shape: tuple[int, ...], repeats: int, second_order: bool = False) -> tuple[float, float]:
    """Kernel and PyTorch ms: forward + backward over a channels-last map (a query pass), or with
    ``second_order`` forward, backward with ``create_graph`` and the double backward over an NCHW map (a
    second-order inner loop's support set; PyTorch's own max-pool, which is differentiable twice)."""
    torch.manual_seed(0)
    x = torch.randn(*shape)
    x = (x if second_order else x.contiguous(memory_format=torch.channels_last)).requires_grad_()
    gamma, beta = (torch.rand(shape[1]) + 0.5).requires_grad_(), torch.randn(shape[1]).requires_grad_()
    pool = nn.MaxPool2d(2)

    def pytorch():
        normalised = F.batch_norm(x, None, None, gamma, beta, True, 0.0, 1e-5)
        return F.relu(F.max_pool2d(normalised, 2) if second_order else max_pool2d(normalised, pool))

    def kernel():
        return batch_norm_relu_pool(x, gamma, beta, 1e-5)[0]

    probe = torch.randn_like(kernel()).requires_grad_(second_order)
    directions = [torch.randn_like(t) for t in (x, gamma, beta)]

    def gradients(function):
        grads = torch.autograd.grad((function() * probe).sum(), (x, gamma, beta), create_graph=second_order)
        if not second_order:
            return grads
        projection = sum((grad * direction).sum() for grad, direction in zip(grads, directions))
        return torch.autograd.grad(projection, (x, gamma, probe))

    return checked_times(kernel, pytorch, gradients, repeats, rtol=1e-3)


def checked_times(kernel, pytorch, gradients, repeats: int, rtol: float) -> tuple[float, float]:
    """Median ms of ``gradients(kernel)`` and ``gradients(pytorch)``, after checking values and gradients agree."""
    assert torch.allclose(kernel(), pytorch(), atol=1e-4)
    for ours, theirs in zip(gradients(kernel), gradients(pytorch)):
        # relative to the largest entry: float32 sums over many images (weight gradients of ~1e3) round to ~1e-5 of it
        error = ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30)).item()
        assert error <= rtol, f"the kernel and PyTorch differ by {error:.1e} of the largest entry"
    times = []
    for function in (kernel, pytorch):
        calls = time_calls(lambda function=function: gradients(function), 3, repeats)
        times.append(statistics.median(calls) * 1e3)
    return times[0], times[1]


def convolution(shape: tuple[int, ...], repeats: int) -> tuple[float, float]:
    """NNPACK and oneDNN ms: forward + input and weight gradients of a 3x3 convolution over ``shape``."""
    torch.manual_seed(0)
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = (torch.randn(shape[1], shape[1], 3, 3) / 24).requires_grad_()
    probe = torch.randn(*shape)

    def gradients(function):
        return torch.autograd.grad((function() * probe).sum(), (x, weight))

    def nnpack():
        return conv3x3(x, weight)

    def onednn():
        return F.conv2d(x, weight, padding=1)

    return checked_times(nnpack, onednn, gradients, repeats, rtol=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="1. first-block, 2. and 3. norm, 4. convolution")
    args = parser.parse_args()
    print(f"CPU: {machine_description()}")
    torch.set_num_threads(args.threads)
    if not native.available():
        raise SystemExit("metalab's compiled kernels are unavailable here (see the warning above)")
    print(f"{'operation':<58} {'kernel ms':>10} {'PyTorch ms':>11} {'ratio':>6}")
    blocks = ((5, "support set, 5-way"), (75, "queries, 5-way"), (300, "queries, 20-way"))
    for images, what in blocks if "first-block" in args.parts else ():
        kernel, pytorch = first_block(images, args.repeats)
        print(f"{f'first block, {images} images ({what})':<58} {kernel:>10.3f} {pytorch:>11.3f} "
              f"{kernel / pytorch:>6.2f}")
    query_maps = ((75, 64, 14, 14), (75, 64, 7, 7), (75, 64, 3, 3), (300, 64, 14, 14), (300, 64, 7, 7),
                  (300, 64, 3, 3), (20, 64, 14, 14))
    support_maps = ((20, 64, 14, 14), (20, 64, 7, 7), (20, 64, 3, 3), (5, 64, 14, 14), (5, 64, 7, 7), (5, 64, 3, 3))
    norms = ((False, "batch norm + relu + pool", query_maps), (True, "second order, NCHW", support_maps))
    for second_order, what, shapes in norms if "norm" in args.parts else ():
        for shape in shapes:
            kernel, pytorch = norm_relu_pool(shape, args.repeats, second_order)
            megabytes = torch.Size(shape).numel() * 4 / 2 ** 20
            print(f"{f'{what} {list(shape)} ({megabytes:.2f} MB)':<58} {kernel:>10.3f} {pytorch:>11.3f} "
                  f"{kernel / pytorch:>6.2f}")
    if "convolution" not in args.parts:
        return
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}; 'kernel' = NNPACK, 'PyTorch' = oneDNN")
    for shape in ((16, 64, 14, 14), (20, 64, 14, 14), (75, 64, 14, 14), (300, 64, 14, 14), (75, 64, 12, 12),
                  (75, 64, 10, 10), (75, 64, 7, 7)):
        kernel, pytorch = convolution(shape, args.repeats)
        print(f"{f'3x3 convolution {list(shape)}':<58} {kernel:>10.3f} {pytorch:>11.3f} {kernel / pytorch:>6.2f}")


if __name__ == "__main__":
    main()
