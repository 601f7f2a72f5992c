"""The compiled first-block kernel (1x1 convolution of patches + ReLU + 2x2 max-pool) against PyTorch's
conv2d, relu and max_pool2d: values, gradients (gradcheck) and second-order gradients (gradgradcheck),
in float64, and the fallback when it is disabled."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalab.accel import native
from metalab.accel.patch_conv_pool import patch_conv_pool

pytestmark = pytest.mark.skipif(not native.available(), reason="compiled kernels unavailable on this machine")


def reference(patches: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """relu(max_pool2d(1x1 conv)) task by task, in the kernel's [N, H/2, W/2, T, C] layout."""
    n, h, w, tasks, depth = patches.shape
    outputs = []
    for t in range(tasks):
        image = patches[:, :, :, t].permute(0, 3, 1, 2)  # [N, D, H, W]
        conv = F.conv2d(image, weight[t][:, :, None, None])
        outputs.append(F.max_pool2d(F.relu(conv), 2).permute(0, 2, 3, 1))  # [N, H/2, W/2, C]
    return torch.stack(outputs, 3)


@pytest.mark.parametrize("n,h,w,tasks,channels,depth", [
    (3, 8, 8, 1, 64, 10),   # Conv-4's first block on Omniglot (4 channel blocks)
    (2, 7, 9, 3, 5, 28),    # odd sizes (floor), several tasks, channels not a multiple of the block, RGB patches
    (1, 2, 2, 2, 17, 1),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_equal_conv_relu_max_pool(n, h, w, tasks, channels, depth, dtype):
    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(n, h, w, tasks, depth, generator=generator, dtype=dtype)
    weight = torch.randn(tasks, channels, depth, generator=generator, dtype=dtype)
    ours, theirs = patch_conv_pool(patches, weight), reference(patches, weight)
    assert ours.shape == (n, h // 2, w // 2, tasks, channels)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(ours, theirs, atol=tolerance, rtol=tolerance)
    if ours.numel() > 100:
        assert (ours == 0).any() and (ours > 0).any()  # both ReLU branches are exercised


def test_gradients_to_second_order_match_gradcheck():
    generator = torch.Generator().manual_seed(1)
    patches = torch.randn(2, 4, 6, 2, 3, generator=generator, dtype=torch.float64)
    weight = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: patch_conv_pool(patches, w), (weight,))
    assert torch.autograd.gradgradcheck(lambda w: patch_conv_pool(patches, w), (weight,))


def test_gradients_equal_pytorchs_to_second_order():
    """d/dw of a loss and d/dw of (a function of that gradient): what a MAML inner loop differentiates."""
    generator = torch.Generator().manual_seed(2)
    patches = torch.randn(4, 10, 10, 2, 10, generator=generator, dtype=torch.float64)
    weight = torch.randn(2, 20, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(4, 5, 5, 2, 20, generator=generator, dtype=torch.float64)
    results = []
    for function in (patch_conv_pool, reference):
        (grad,) = torch.autograd.grad((function(patches, weight) * probe).sum(), weight, create_graph=True)
        (second,) = torch.autograd.grad((grad.sin() * function(patches, weight).sum()).sum(), weight)
        results.append((grad.detach(), second))
    for ours, theirs in zip(*results):
        assert torch.allclose(ours, theirs, atol=1e-10, rtol=1e-10)


def test_ties_go_to_the_first_maximum_as_in_max_pool2d():
    patches = torch.ones(1, 4, 4, 1, 2, dtype=torch.float64)  # every window position gives the same value
    weight = torch.tensor([[[0.5, 0.25], [-1.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    probe = torch.arange(8, dtype=torch.float64).view(1, 2, 2, 1, 2)
    ours = torch.autograd.grad((patch_conv_pool(patches, weight) * probe).sum(), weight)[0]
    theirs = torch.autograd.grad((reference(patches, weight) * probe).sum(), weight)[0]
    assert torch.equal(ours, theirs)


def test_patches_that_need_a_gradient_are_refused():
    patches = torch.randn(1, 2, 2, 1, 3, requires_grad=True)
    with pytest.raises(ValueError, match="no gradient to its patches"):
        patch_conv_pool(patches, torch.randn(1, 4, 3))


def test_conv4_gives_the_same_outputs_and_gradients_with_and_without_the_kernel():
    from metalab.accel.folded import ForwardSettings, task_forward
    from metalab.nn.backbones import Conv4

    torch.manual_seed(0)
    module = Conv4(1, 16).double()
    params = {n: (p.detach() + 0.1 * torch.randn(2, *p.shape, dtype=torch.float64)).requires_grad_()
              for n, p in module.named_parameters()}
    x = torch.rand(2, 6, 1, 28, 28, dtype=torch.float64)
    results = []
    for native_kernels in (True, False):
        settings = ForwardSettings(channels_last=True, native_kernels=native_kernels)
        out = task_forward(module, params, x, settings)
        grads = torch.autograd.grad(out.pow(2).sum(), list(params.values()), create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), list(params.values()))
        results.append([out.detach(), *[g.detach() for g in grads], *second])
    for ours, theirs in zip(*results):
        assert torch.allclose(ours, theirs, atol=1e-10, rtol=1e-10)


def test_metalab_native_0_turns_the_kernels_off(monkeypatch):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv(native.ENV, "0")
    assert not native.available()
