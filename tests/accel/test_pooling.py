"""max_pool2d (saving only the indices) against F.max_pool2d: values, gradients, second order, memory."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalab.accel import pooling
from metalab.accel.pooling import max_pool2d


@pytest.fixture(autouse=True)
def _every_size(monkeypatch):
    """The own function for every input size, so that these small tensors exercise it."""
    monkeypatch.setattr(pooling, "MIN_BYTES", 0)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)],
                         ids=["2x2", "3x3-stride2-padded-ceil"])
def test_max_pool_equals_torch_to_second_order(channels_last, pool):
    torch.manual_seed(0)
    weight = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def loss(pooling):
        y = torch.tanh(F.conv2d(x, weight, padding=1))  # pooled input that depends on the parameter
        pooled = pooling(y)
        (grad,) = torch.autograd.grad((pooled ** 3).sum(), [weight], create_graph=True)
        return pooled, grad, torch.autograd.grad((grad ** 2).sum(), [weight])[0]

    ours = loss(lambda y: max_pool2d(y, pool))
    expected = loss(pool)
    for a, b in zip(ours, expected):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    assert ours[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_the_pooled_input_is_not_kept_for_the_backward():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = x * 2  # an intermediate, as in a network
    saved = []

    def pack(tensor):
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        max_pool2d(y, nn.MaxPool2d(2))
    assert (2, 3, 8, 8) not in saved and saved == [(2, 3, 4, 4)]  # the indices only
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.max_pool2d(y, 2)
    assert (2, 3, 8, 8) in saved  # what PyTorch's own keeps
