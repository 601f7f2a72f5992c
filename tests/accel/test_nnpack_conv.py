"""NNPACK's 3x3 convolution with NNPACK gradients (metalab.accel.nnpack_conv): its gradient formulas exactly
in float64 (gradcheck, with a direct convolution standing in for NNPACK, which has no float64 kernels),
NNPACK's float32 values and gradients against a float64 direct convolution, and a MAML meta-gradient with
and without it (never in a forward whose gradients are differentiated again: its backward is once
differentiable)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalab.accel import native, nnpack_conv

pytestmark = pytest.mark.skipif(not native.available(), reason="compiled kernels unavailable on this machine")


@pytest.fixture
def float32():
    """NNPACK is float32 only (this folder's conftest makes float64 the default)."""
    torch.set_default_dtype(torch.float32)


def test_gradient_formulas_are_exact_with_a_direct_convolution_in_their_place(monkeypatch):
    # the three products (forward, dx by the flipped weights, dw with images as channels) in float64
    monkeypatch.setattr(nnpack_conv, "_convolve",
                        lambda x, weight, bias, padding: F.conv2d(x, weight, bias, padding=padding))
    monkeypatch.setattr(nnpack_conv, "_weight_gradient", lambda x, grad_out: F.conv2d(
        F.pad(x, (1, 1, 1, 1)).transpose(0, 1), grad_out.transpose(0, 1)).transpose(0, 1))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(7, 4, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(nnpack_conv._Conv3x3.apply, (x, weight, bias))
    probe = torch.randn(3, 7, 6, 5, dtype=torch.float64, generator=generator)
    ours = torch.autograd.grad(nnpack_conv._Conv3x3.apply(x, weight, bias), (x, weight, bias), probe)
    theirs = torch.autograd.grad(F.conv2d(x, weight, bias, padding=1), (x, weight, bias), probe)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("grad_format", [torch.contiguous_format, torch.channels_last],
                         ids=["dy-nchw", "dy-channels-last"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("shape", [(75, 64, 14, 14), (16, 3, 12, 13), (17, 12, 14, 9)],
                         ids=["conv4-query-layer2", "odd", "odd-transpose-tails"])
def test_values_and_gradients_equal_a_float64_direct_convolution(shape, memory_format, grad_format, float32):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=generator).contiguous(memory_format=memory_format).requires_grad_()
    weight = torch.randn(64 if shape[1] == 64 else 5, shape[1], 3, 3, generator=generator).requires_grad_()
    bias = torch.randn(weight.shape[0], generator=generator).requires_grad_()
    out = nnpack_conv.conv3x3(x, weight, bias)
    assert out.is_contiguous(memory_format=memory_format)  # the input's layout, without a copy after the kernel
    probe = torch.randn(out.shape, generator=generator).contiguous(memory_format=grad_format)
    ours = [out, *torch.autograd.grad(out, (x, weight, bias), probe)]
    assert ours[1].is_contiguous(memory_format=grad_format)  # dx in the incoming gradient's layout
    x64, weight64, bias64 = (t.detach().double().requires_grad_() for t in (x, weight, bias))
    out64 = F.conv2d(x64, weight64, bias64, padding=1)
    exact = [out64, *torch.autograd.grad(out64, (x64, weight64, bias64), probe.double())]
    for name, a, b in zip(("output", "dx", "dweight", "dbias"), ours, exact):
        assert a.shape == b.shape and a.dtype == torch.float32
        error = ((a.double() - b).abs().max() / b.abs().max()).item()
        assert error < 3e-5, f"{name}: largest error {error:.1e} of the largest entry"


def test_convolutions_it_cannot_compute_are_refused(float32):
    """float32 only, stride 1, padding 1, one group, no autocast: anything else stays with PyTorch."""
    weight = torch.zeros(64, 64, 3, 3)
    args = ((1, 1), (1, 1), (1, 1), 1)
    assert nnpack_conv.supported(torch.zeros(75, 64, 14, 14), weight, *args)
    assert not nnpack_conv.supported(torch.zeros(75, 64, 14, 14, dtype=torch.float64), weight.double(), *args)
    assert not nnpack_conv.supported(torch.zeros(75, 64, 14, 14), weight, (2, 2), (1, 1), (1, 1), 1)
    assert not nnpack_conv.supported(torch.zeros(75, 64, 14, 14), weight, (1, 1), (0, 0), (1, 1), 1)
    assert not nnpack_conv.supported(torch.zeros(75, 64, 14, 14), weight[:, :32], (1, 1), (1, 1), (1, 1), 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not nnpack_conv.supported(torch.zeros(75, 64, 14, 14), weight, *args)


@pytest.mark.parametrize("shots", [1, 4], ids=["1-shot", "4-shot"])
def test_only_forwards_differentiated_once_use_it_and_a_maml_meta_gradient_agrees(shots, monkeypatch, float32):
    from metalab.algorithms.gradient.maml import MAML
    from metalab.data.task import Task
    from metalab.nn.execution import SpeedOptions

    calls = []
    original = nnpack_conv.conv3x3
    monkeypatch.setattr(nnpack_conv, "conv3x3", lambda *a: calls.append(a[0].shape) or original(*a))
    torch.manual_seed(0)
    ways, queries = 5, 4  # 20 query images per task: the second layer's 14x14 maps qualify
    support_x, query_x = torch.rand(2, ways * shots, 1, 28, 28), torch.rand(2, ways * queries, 1, 28, 28)
    support_y = torch.arange(ways).repeat_interleave(shots).repeat(2, 1)
    query_y = torch.arange(ways).repeat_interleave(queries).repeat(2, 1)
    gradients = []
    for winograd in (True, False):
        calls.clear()
        learner = MAML(MAML.Options(name="maml", ways=ways, inner_steps=2, inner_lr=0.4), (1, 28, 28),
                       SpeedOptions(winograd=winograd))
        torch.manual_seed(1)
        for parameter in learner.network.parameters():
            parameter.data.normal_(0, 0.1)
        learner.meta_step(Task(support_x, support_y, query_x, query_y))
        gradients.append([p.grad.clone() for p in learner.network.parameters()])
        # second order: the 20-image query sets at the second layer, never the inner loop (20 images at 4 shots)
        assert calls == ([torch.Size([20, 64, 14, 14])] * 2 if winograd else [])
    # float32 rounding apart (the convolution biases' gradients are rounding noise: BatchNorm cancels them)
    ours, theirs = (torch.cat([g.flatten() for g in grads]) for grads in gradients)
    assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-4
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-4 * theirs.abs().max().item())
