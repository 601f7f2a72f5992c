"""conv_batch_norm (a thin-input convolution + BatchNorm as one matmul of normalised weights) against
F.conv2d followed by F.batch_norm: values, gradients and second-order gradients in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab.accel.conv_norm import conv_batch_norm, foldable

TASKS = 3


def reference(conv, norm, x, tasks, params, statistics, running):
    """Task by task: F.conv2d then F.batch_norm with that task's parameters, folded back to [N, T*C, H, W]."""
    outputs = []
    c_in = x.shape[1] // tasks
    for t in range(tasks):
        weight, bias, gamma, beta = (task_value(params[k], t, 4 if k == "weight" else 1)
                                     for k in ("weight", "bias", "norm_weight", "norm_bias"))
        y = F.conv2d(x[:, t * c_in:(t + 1) * c_in], weight, bias, conv.stride, conv.padding, conv.dilation)
        if statistics == "batch":
            y = F.batch_norm(y, None, None, gamma, beta, True, 0.0, norm.eps)
        else:
            y = F.batch_norm(y, running[0], running[1], gamma, beta, False, 0.0, norm.eps)
        outputs.append(y)
    return torch.cat(outputs, 1)


def task_value(value, t, shared_dims):
    """Task t's value of a parameter that is shared (``shared_dims`` dims) or per task (one more)."""
    if value is None:
        return None
    return value[t] if value.dim() > shared_dims else value


def make(c_in, per_task, affine=True, bias=True, stride=1, padding=1):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, 5, 3, stride=stride, padding=padding, bias=bias)
    norm = nn.BatchNorm2d(5, affine=affine)
    params = {"weight": conv.weight.detach(), "bias": None if conv.bias is None else conv.bias.detach(),
              "norm_weight": torch.rand(5) + 0.5 if affine else None,
              "norm_bias": torch.randn(5) if affine else None}
    if per_task:
        params = {k: None if v is None else v + 0.1 * torch.randn(TASKS, *v.shape) for k, v in params.items()}
    params = {k: None if v is None else v.clone().requires_grad_() for k, v in params.items()}
    return conv, norm, params


@pytest.mark.parametrize("statistics", ["batch", "running"])
@pytest.mark.parametrize("per_task", [False, True], ids=["shared", "per-task"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("layer", ["omniglot", "rgb-stride2-no-affine"])
def test_conv_batch_norm_equals_conv_then_batch_norm_to_second_order(statistics, per_task, channels_last, layer):
    tasks = TASKS if per_task or layer == "omniglot" else 1
    if layer == "omniglot":
        conv, norm, params = make(1, per_task)
        x = torch.rand(6, tasks * 1, 10, 10)
    else:
        conv, norm, params = make(3, per_task, affine=False, bias=False, stride=2, padding=0)
        x = torch.randn(4, tasks * 3, 9, 9) * 2 + 1  # off-centre inputs: the patches are centred exactly
    assert foldable(conv, norm)
    running = (torch.randn(5), torch.rand(5) + 0.5) if statistics == "running" else None
    ours, record = conv_batch_norm(conv, norm, x, tasks, params, statistics, running, channels_last)
    expected = reference(conv, norm, x, tasks, params, statistics, running)
    assert ours.shape == expected.shape
    assert ours.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.allclose(ours, expected, atol=1e-12, rtol=0)

    leaves = [v for v in params.values() if v is not None]
    probe = torch.randn_like(expected)

    def gradients(out, create_graph):
        return torch.autograd.grad((out * probe).sum(), leaves, create_graph=create_graph, allow_unused=True)

    ours_grads = gradients(ours, True)
    expected_grads = gradients(expected, True)
    for a, b in zip(ours_grads, expected_grads):  # every leaf is used by both
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-10)
    # second order: the gradient of a function of the first gradients (what MAML's meta-gradient needs)
    def second(grads):
        total = sum((g ** 2).sum() for g in grads if g is not None and g.requires_grad)  # a 0-dim tensor
        return torch.autograd.grad(total, leaves, allow_unused=True)

    ours_second, expected_second = second(ours_grads), second(expected_grads)
    present = [float(b.abs().max()) for b in (*ours_second, *expected_second) if b is not None]
    scale = max(present, default=0.0)  # no second order at all when the map is linear (running, no affine)
    if statistics == "batch":
        assert scale > 1.0  # the comparison is not between zeros
    for a, b in zip(ours_second, expected_second):
        if a is None and b is None:
            continue
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        assert torch.allclose(a, b, atol=1e-10 * scale, rtol=0)  # the bias's: 0 exactly vs rounding noise

    if statistics == "batch":  # the recorded statistics: per-channel mean and unbiased variance, task-averaged
        c_in = x.shape[1] // tasks
        raw = [F.conv2d(x[:, t * c_in:(t + 1) * c_in], task_value(params["weight"], t, 4),
                        task_value(params["bias"], t, 1), conv.stride, conv.padding) for t in range(tasks)]
        mean = torch.stack([y.mean((0, 2, 3)) for y in raw]).mean(0)
        var = torch.stack([y.var((0, 2, 3), unbiased=True) for y in raw]).mean(0)
        assert torch.allclose(record[0], mean, atol=1e-12) and torch.allclose(record[1], var, atol=1e-12)
    else:
        assert record is None


def test_the_conv_bias_gets_exactly_zero_gradient_under_batch_statistics():
    conv, norm, params = make(1, per_task=False)
    out, _ = conv_batch_norm(conv, norm, torch.rand(4, 1, 8, 8), 1, params)
    (grad,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), [params["bias"]])
    assert torch.equal(grad, torch.zeros_like(grad))


def test_only_thin_inputs_are_folded():
    assert foldable(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64))  # 27 values per output
    assert not foldable(nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64))  # 576: the covariance would cost more than it saves
    assert not foldable(nn.Conv2d(1, 8, 3, groups=1, padding="same"), nn.BatchNorm2d(8))
    assert not foldable(nn.Conv2d(2, 8, 3, groups=2), nn.BatchNorm2d(8))
    assert not foldable(nn.Conv2d(1, 8, 3), nn.ReLU())


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
def test_slices_of_images_give_the_same_values_and_gradients(channels_last):
    conv, norm, params = make(1, per_task=True)
    x = torch.rand(7, TASKS, 10, 10)

    def then(out):
        return torch.relu(F.max_pool2d(out, 2))

    whole, whole_record = conv_batch_norm(conv, norm, x, TASKS, params, channels_last=channels_last)
    whole = then(whole)
    image_bytes = TASKS * 5 * 100 * 8
    sliced, sliced_record = conv_batch_norm(conv, norm, x, TASKS, params, channels_last=channels_last, then=then,
                                            slice_bytes=3 * image_bytes)  # slices of 3, 3 and 1 images
    assert torch.allclose(sliced, whole, atol=1e-13, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(sliced_record, whole_record))
    leaves = [v for v in params.values() if v is not None]
    probe = torch.randn_like(whole)
    for a, b in zip(torch.autograd.grad((sliced * probe).sum(), leaves),
                    torch.autograd.grad((whole * probe).sum(), leaves)):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-12)


def test_conv4_keeps_no_full_size_activation_for_its_backward(monkeypatch):
    """Folded and sliced, Conv-4's first block saves only slice-sized tensors and the pooled output."""
    from metalab.accel import folded, pooling
    from metalab.accel.folded import ForwardSettings, task_forward
    from metalab.nn.backbones import Conv4

    monkeypatch.setattr(folded, "SLICE_BYTES", 4 * 8 * 28 * 28 * 8)  # 4 images at a time
    monkeypatch.setattr(pooling, "MIN_BYTES", 0)
    module = Conv4(1, 8)
    params = {n: p.detach().unsqueeze(0).requires_grad_() for n, p in module.named_parameters()}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        task_forward(module, params, torch.rand(1, 12, 1, 28, 28),
                     ForwardSettings(channels_last=True, native_kernels=False))
    full_size = [shape for shape in saved if shape[-2:] == (28, 28) and shape[0] == 12 and shape[1] == 8]
    assert not full_size, full_size
    assert (4, 8, 14, 14) in saved  # the pooling indices of a slice


def test_conv4_with_the_compiled_first_block_saves_less_than_its_full_size_activation():
    """With the compiled kernel (metalab/accel/patch_conv_pool.py), the first block saves the patches
    (10 values per pixel) and a byte per pooled output, never the [N, C, 28, 28] map."""
    from metalab.accel import patch_conv_pool
    from metalab.accel.folded import ForwardSettings, task_forward
    from metalab.nn.backbones import Conv4

    if not patch_conv_pool.native.available():
        pytest.skip("compiled kernels unavailable on this machine")
    module = Conv4(1, 64)
    params = {n: p.detach().unsqueeze(0).requires_grad_() for n, p in module.named_parameters()}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((tuple(t.shape), t.dtype)) or t, lambda t: t):
        task_forward(module, params, torch.rand(1, 12, 1, 28, 28), ForwardSettings(channels_last=True))
    assert ((12, 28, 28, 1, 10), torch.get_default_dtype()) in saved  # the centred patches with the constant 1
    assert ((12, 14, 14, 1, 64), torch.uint8) in saved  # where each maximum was
    assert not [shape for shape, _ in saved if torch.Size(shape).numel() >= 12 * 64 * 28 * 28]
