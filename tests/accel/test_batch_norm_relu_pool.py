"""The compiled BatchNorm + ReLU + 2x2 max-pool kernel against F.batch_norm, F.relu and F.max_pool2d, in
both memory formats: values, statistics, gradients and second derivatives in float64 (gradcheck,
gradgradcheck), its refusal of a third derivative, and where the forwards use it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalab.accel import batch_norm_relu_pool as fused
from metalab.accel import native
from metalab.accel.batch_norm_relu_pool import batch_norm_relu_pool

pytestmark = pytest.mark.skipif(not native.available(), reason="compiled kernels unavailable on this machine")


def reference(x, gamma, beta, eps):
    return F.max_pool2d(F.relu(F.batch_norm(x, None, None, gamma, beta, True, 0.0, eps)), 2)


FORMATS = [torch.channels_last, torch.contiguous_format]
FORMAT_IDS = ["channels-last", "nchw"]


def channels_last(*shape, seed=0, dtype=torch.float64, memory_format=torch.channels_last):
    generator = torch.Generator().manual_seed(seed)
    x = 2.0 + 3.0 * torch.randn(*shape, generator=generator, dtype=dtype)  # a mean far from 0 on purpose
    return x.contiguous(memory_format=memory_format)


@pytest.mark.parametrize("memory_format", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("shape", [(6, 64, 14, 14), (5, 7, 7, 9), (3, 3, 2, 3)], ids=["conv4-layer2", "odd", "tiny"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_statistics_equal_batch_norm_relu_max_pool(shape, dtype, memory_format):
    x = channels_last(*shape, dtype=dtype, memory_format=memory_format)
    gamma = torch.rand(shape[1], dtype=dtype) + 0.5
    gamma[0] = -gamma[0]  # a negative scale turns the window's minimum into its maximum
    beta = torch.randn(shape[1], dtype=dtype)
    out, mean, var = batch_norm_relu_pool(x, gamma, beta, 1e-5)
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    assert out.is_contiguous(memory_format=memory_format)
    assert torch.allclose(out, reference(x, gamma, beta, 1e-5), atol=tolerance, rtol=tolerance)
    dims = (0, 2, 3)
    assert torch.allclose(mean, x.double().mean(dims), atol=1e-6 if dtype == torch.float32 else 1e-12)
    assert torch.allclose(var, x.double().var(dims, unbiased=False), rtol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("memory_format", FORMATS, ids=FORMAT_IDS)
def test_gradients_and_second_derivatives_equal_pytorchs_and_gradgradcheck(memory_format):
    x = channels_last(4, 6, 7, 6, seed=1, memory_format=memory_format).requires_grad_()
    gamma = torch.rand(6, dtype=torch.float64) + 0.5
    gamma[1] = -gamma[1]
    gamma.requires_grad_()
    beta = torch.randn(6, dtype=torch.float64).requires_grad_()
    probe = torch.randn(4, 6, 3, 3, dtype=torch.float64).requires_grad_()
    directions = [torch.randn_like(t) for t in (x, gamma, beta)]
    results = []
    for function in (batch_norm_relu_pool, reference):
        out = function(x, gamma, beta, 1e-5)
        out = out[0] if isinstance(out, tuple) else out
        grads = torch.autograd.grad((out * probe).sum(), (x, gamma, beta), create_graph=True)
        projection = sum((grad * direction).sum() for grad, direction in zip(grads, directions))
        # beta's gradient does not depend on beta, nor dx on it (piecewise): 0 for PyTorch, None for the kernel
        second = torch.autograd.grad(projection, (x, gamma, probe, beta), allow_unused=True)
        results.append([g.detach() for g in grads] + [torch.zeros_like(beta) if g is None else g for g in second])
    for ours, theirs in zip(*results):
        assert torch.allclose(ours, theirs, atol=1e-10, rtol=1e-10)
    small = channels_last(3, 2, 4, 4, seed=2, memory_format=memory_format).requires_grad_()
    inputs = (small, gamma[:2].detach().clone().requires_grad_(), beta[:2].detach().clone().requires_grad_())
    torch.autograd.gradcheck(lambda x, g, b: batch_norm_relu_pool(x, g, b, 1e-5)[0], inputs)
    torch.autograd.gradgradcheck(lambda x, g, b: batch_norm_relu_pool(x, g, b, 1e-5)[0], inputs)


def test_a_third_derivative_is_refused_with_a_clear_error():
    x = channels_last(2, 3, 4, 4).requires_grad_()
    weights = torch.rand(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    out, _, _ = batch_norm_relu_pool(x, None, None, 1e-5)
    (grad,) = torch.autograd.grad((out * weights).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad((grad * grad).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        second.sum().backward()


def test_conv4_query_pass_gives_the_same_outputs_gradients_and_running_statistics(monkeypatch):
    from metalab.accel.folded import ForwardSettings, task_forward
    from metalab.nn.backbones import Conv4

    monkeypatch.setattr(fused, "MIN_BYTES", 0)
    torch.manual_seed(0)
    module = Conv4(1, 16).double()
    params = {n: (p.detach() + 0.1 * torch.randn(3, *p.shape, dtype=torch.float64)).requires_grad_()
              for n, p in module.named_parameters()}
    x = torch.rand(3, 6, 1, 28, 28, dtype=torch.float64)
    results, records = [], []
    for native_kernels in (True, False):
        record = {}
        settings = ForwardSettings(record=record, channels_last=True, native_kernels=native_kernels,
                                   once_differentiable=True)
        out = task_forward(module, params, x, settings)
        results.append([out.detach(), *torch.autograd.grad(out.pow(2).sum(), list(params.values()))])
        records.append(record)
    for ours, theirs in zip(*results):
        assert torch.allclose(ours, theirs, atol=1e-10, rtol=1e-10)
    assert records[0].keys() == records[1].keys() and len(records[0]) == 4
    for key in records[0]:
        for a, b in zip(records[0][key], records[1][key]):
            assert torch.allclose(a.double(), b.double(), rtol=1e-6)
