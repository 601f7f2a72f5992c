"""The compute floor of a MAML meta-iteration on this CPU: the query pass's convolutions at the best rate measured.

    python benchmarks/speed/conv_floor.py [--threads 2] [--ways 5 20] [--repeats 20]

Whatever an implementation does, a second-order MAML meta-iteration runs, for each of the 32 tasks,
a forward and backward pass of Conv-4 over the task's queries at its adapted weights (75 images at
5-way, 300 at 20-way). This script

1. counts the FLOPs of those passes' 3x3 convolutions (forward, weight gradient, input gradient
   except the first layer's) per meta-iteration,
2. measures the best rate of oneDNN's convolutions (PyTorch's CPU kernels) at exactly those
   shapes, forward+backward in channels-last, and a large matrix product,
3. prints the floor: layers 2-4 (98 % of the FLOPs) at that rate. The first layer (metalab runs it
   as a 1x1 convolution of patches, not as PyTorch's slow 1-channel kernel), the support sets'
   inner loop and its double backward come on top of it.

``--winograd`` also times layer 2's forward as Winograd F(2x2, 3x3) written with PyTorch
operations (2.25x fewer multiplies, but transforms that pass through memory), against oneDNN.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from meta_iteration import machine_description, time_calls  # this script's directory is on sys.path

TASKS, QUERIES, HIDDEN = 32, 15, 64
#: Conv-4 on 28x28: (input channels, output size) of each 3x3 convolution
LAYERS = [(1, 28), (HIDDEN, 14), (HIDDEN, 7), (HIDDEN, 3)]


def best_ms(function, repeats: int) -> float:
    return 1e3 * min(time_calls(function, 3, repeats))


def layer_rate(images: int, c_in: int, size: int, repeats: int) -> tuple[float, float]:
    """(GFLOP, best ms) of one layer's forward + weight gradient (+ input gradient unless c_in == 1)."""
    x = torch.randn(images, c_in, size, size).contiguous(memory_format=torch.channels_last)
    w = torch.randn(HIDDEN, c_in, 3, 3).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(c_in > 1)
    w.requires_grad_()
    grad = torch.randn(images, HIDDEN, size, size).contiguous(memory_format=torch.channels_last)
    wrt = [w, x] if c_in > 1 else [w]

    def run():
        torch.autograd.grad(F.conv2d(x, w, padding=1), wrt, grad)

    macs = images * size * size * HIDDEN * c_in * 9
    passes = 3 if c_in > 1 else 2
    return 2 * macs * passes / 1e9, best_ms(run, repeats)


def winograd_forward(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """3x3 convolution (padding 1, even size) as Winograd F(2x2, 3x3) in PyTorch operations."""
    bt = x.new_tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    g = x.new_tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    at = x.new_tensor([[1, 1, 1, 0], [0, 1, -1, -1]])
    n, c, size, _ = x.shape
    tiles = size // 2
    padded = F.pad(x, (1, 1, 1, 1))
    s = padded.stride()
    patches = padded.as_strided((n, c, tiles, tiles, 4, 4), (s[0], s[1], 2 * s[2], 2 * s[3], s[2], s[3]))
    v = torch.einsum("ij,nctujk,lk->ilntuc", bt, patches, bt).reshape(16, n * tiles * tiles, c)
    u = torch.einsum("ij,ocjk,lk->ilco", g, w, g).reshape(16, c, -1)
    m = torch.bmm(v, u).view(4, 4, n, tiles, tiles, -1)
    return torch.einsum("ai,ijntuo,bj->notaub", at, m, at).reshape(n, -1, size, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--winograd", action="store_true")
    args = parser.parse_args()
    print(f"CPU: {machine_description()}")
    torch.set_num_threads(args.threads)

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemm_ms = best_ms(lambda: a @ b, args.repeats)
    print(f"matrix product 2048^3: {2 * 2048 ** 3 / gemm_ms / 1e6:.1f} GFLOP/s (best of {args.repeats})")
    for ways in args.ways:
        images = ways * QUERIES
        total_gflop, total_ms = 0.0, 0.0
        for c_in, size in LAYERS:
            gflop, ms = layer_rate(images, c_in, size, args.repeats)
            print(f"{ways:>3}-way layer {c_in:>2}->{HIDDEN} at {size:>2}x{size:<2} on {images} images: "
                  f"{gflop:.3f} GFLOP, {gflop / ms * 1e3:5.1f} GFLOP/s forward+backward")
            if c_in > 1:  # the first layer (2 % of the FLOPs) is not a convolution in metalab: left out of the floor
                total_gflop, total_ms = total_gflop + gflop, total_ms + ms
        print(f"{ways:>3}-way: layers 2-4 of the query passes of one meta-iteration = {TASKS * total_gflop:.1f} GFLOP; "
              f"at the best rates measured above they take {TASKS * total_ms / 1e3:.3f} s (the floor, before "
              f"the first layer, the support sets' inner loop and its double backward)")
    if args.winograd:
        x = torch.randn(75, HIDDEN, 14, 14).contiguous(memory_format=torch.channels_last)
        w = torch.randn(HIDDEN, HIDDEN, 3, 3)
        error = float((winograd_forward(x, w) - F.conv2d(x, w, padding=1)).abs().max())
        v, u = torch.randn(16, 75 * 49, HIDDEN), torch.randn(16, HIDDEN, HIDDEN)
        print(f"layer 2 forward, 75 images: oneDNN {best_ms(lambda: F.conv2d(x, w, padding=1), args.repeats):.2f} ms, "
              f"Winograd F(2x2,3x3) in PyTorch operations "
              f"{best_ms(lambda: winograd_forward(x, w), args.repeats):.2f} ms "
              f"(max difference {error:.1e}); its batched product alone "
              f"{best_ms(lambda: torch.bmm(v, u), args.repeats):.2f} ms")


if __name__ == "__main__":
    main()
