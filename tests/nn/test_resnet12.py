"""ResNet-12 against the published architecture (shapes, parameter count, a functional transcription
of the paper's block), under torch.func.functional_call and second-order autograd, and DropBlock's
statistics against the probabilities of its block geometry."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metalab.nn.backbones import build_backbone, embedding_dim
from metalab.nn.resnet12 import DropBlock2d, ResNet12

TINY = (2, 3, 3, 4)

pytestmark = pytest.mark.usefixtures("one_thread")


@contextmanager
def float32() -> Iterator[None]:
    """Full-width networks are built and run in float32 (this folder's default is float64)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def tiny(**options) -> ResNet12:
    torch.manual_seed(0)
    return ResNet12(in_channels=options.pop("in_channels", 1), channels=TINY, **options)


def reference_parameter_count(in_channels: int, channels: tuple[int, ...]) -> int:
    """Per block: three 3x3 convolutions and a 1x1 shortcut, no biases; four BatchNorms (weight and bias)."""
    total, c_in = 0, in_channels
    for c in channels:
        total += 9 * c_in * c + 2 * 9 * c * c + c_in * c + 4 * 2 * c
        c_in = c
    return total


def reference_forward(params: dict[str, torch.Tensor], images: torch.Tensor, training: bool,
                      buffers: dict[str, torch.Tensor]) -> torch.Tensor:
    """The paper's ResNet-12 written with torch.nn.functional: per block Rk = three {conv3x3, BN,
    LeakyReLU(0.1)}, the last activation after adding the shortcut (conv1x1, BN), then MP (2x2);
    global average pooling at the end."""

    def bn(x, prefix):
        return F.batch_norm(x, buffers[f"{prefix}.running_mean"].clone(), buffers[f"{prefix}.running_var"].clone(),
                            params[f"{prefix}.weight"], params[f"{prefix}.bias"], training)

    x = images
    for b in range(4):
        p = f"blocks.{b}"
        h = x
        for j, (conv, norm) in enumerate(((0, 1), (3, 4), (6, 7))):
            h = bn(F.conv2d(h, params[f"{p}.body.{conv}.weight"], padding=1), f"{p}.body.{norm}")
            if j < 2:
                h = F.leaky_relu(h, 0.1)
        shortcut = bn(F.conv2d(x, params[f"{p}.shortcut.0.weight"]), f"{p}.shortcut.1")
        x = F.max_pool2d(F.leaky_relu(h + shortcut, 0.1), 2)
    return x.mean((2, 3))


@pytest.fixture(scope="module")
def published() -> ResNet12:
    """The default ResNet-12 for RGB inputs, flattened without pooling (MetaOptNet), in float32."""
    torch.manual_seed(0)
    with float32():
        return ResNet12(in_channels=3, avg_pool=False).eval()


@torch.no_grad()
def test_output_shapes_for_mini_imagenet_and_omniglot_inputs(published):
    with float32():
        rgb, gray = torch.rand(2, 3, 84, 84), torch.rand(2, 1, 28, 28)
        assert published(rgb).shape == (2, 640 * 5 * 5) == (2, 16000)  # 84 -> 42 -> 21 -> 10 -> 5
        assert ResNet12(3, avg_pool=True).eval()(rgb).shape == (2, 640)
        for avg_pool in (False, True):  # 28 -> 14 -> 7 -> 3 -> 1
            assert ResNet12(1, avg_pool=avg_pool).eval()(gray).shape == (2, 640)
    # feature maps (flatten=False), at a small width: the spatial sizes do not depend on it
    assert tiny(in_channels=3, avg_pool=False, flatten=False).eval()(rgb.double()).shape == (2, TINY[-1], 5, 5)
    assert tiny(in_channels=3, avg_pool=True, flatten=False).eval()(rgb.double()).shape == (2, TINY[-1], 1, 1)
    assert tiny(in_channels=1, avg_pool=False, flatten=False).eval()(gray.double()).shape == (2, TINY[-1], 1, 1)


def test_parameter_count_is_the_reference_architectures(published):
    count = sum(p.numel() for p in published.parameters())
    assert count == reference_parameter_count(3, (64, 160, 320, 640)) == 12_424_320
    assert sum(p.numel() for p in tiny().parameters()) == reference_parameter_count(1, TINY)
    convs = [m for m in published.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 * 4 and all(m.bias is None for m in convs)


def test_initialisation_is_kaiming_fan_out_and_unit_batch_norm(published):
    model = published
    weight = model.blocks[3].body[3].weight  # 640 x 640 x 3 x 3
    expected_std = (2.0 / (640 * 9)) ** 0.5  # gain sqrt(2) (leaky_relu, slope 0) over sqrt(fan_out)
    assert abs(float(weight.detach().std()) / expected_std - 1.0) < 0.01
    assert abs(float(weight.detach().mean())) < 0.01 * expected_std
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))


@pytest.mark.parametrize("training", [True, False])
def test_forward_and_functional_call_match_the_papers_block(training):
    model = tiny(in_channels=2).train(training)
    if not training:  # non-trivial running statistics
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if "running" in name:
                    buffer.uniform_(0.5, 1.5)
    images = torch.randn(5, 2, 20, 20)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected = reference_forward(params, images, training, buffers)
    torch.testing.assert_close(model(images), expected)
    # Other values through functional_call: the parameter dict, not the module's own, is used.
    shifted = {n: p + 0.1 * torch.randn_like(p) for n, p in params.items()}
    torch.testing.assert_close(functional_call(model, shifted, (images,)),
                               reference_forward(shifted, images, training, buffers))
    other = copy.deepcopy(model)
    other.load_state_dict({**buffers, **shifted})
    torch.testing.assert_close(functional_call(model, shifted, (images,)), other(images))


def test_second_order_meta_gradient_matches_finite_differences():
    """d/dp L_query(p - a grad L_support(p)) by autograd through the inner gradient (create_graph)
    against central differences of the same function, along a random direction."""
    model = tiny(in_channels=1).train()
    names = [n for n, _ in model.named_parameters()]
    start = [p.detach().clone() for _, p in model.named_parameters()]
    generator = torch.Generator().manual_seed(1)
    support_x, query_x = torch.randn(6, 1, 16, 16, generator=generator), torch.randn(6, 1, 16, 16, generator=generator)
    head = torch.randn(TINY[-1], 3, generator=generator)
    support_y, query_y = torch.arange(6) % 3, torch.arange(6) % 3

    def loss(values, x, y):
        return F.cross_entropy(functional_call(model, dict(zip(names, values)), (x,)) @ head, y)

    def meta_loss(values, create_graph):
        grads = torch.autograd.grad(loss(values, support_x, support_y), values, create_graph=create_graph)
        return loss([v - 0.5 * g for v, g in zip(values, grads)], query_x, query_y)

    values = [v.clone().requires_grad_() for v in start]
    meta_grads = torch.autograd.grad(meta_loss(values, create_graph=True), values)
    assert all(torch.isfinite(g).all() for g in meta_grads)
    direction = [torch.randn(v.shape, generator=generator) for v in start]
    analytic = sum(float((g * d).sum()) for g, d in zip(meta_grads, direction))

    def at(step):
        return float(meta_loss([(v + step * d).requires_grad_() for v, d in zip(start, direction)],
                               create_graph=False).detach())

    # Max-pool and LeakyReLU make the inner gradient piecewise smooth: a small step stays on one piece.
    eps = 1e-6
    numeric = (at(eps) - at(-eps)) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-5 * max(1.0, abs(numeric))
    # The second-order term matters: first-order MAML's gradient differs.
    first_order = torch.autograd.grad(meta_loss(values, create_graph=False), values)
    assert abs(sum(float((g * d).sum()) for g, d in zip(first_order, direction)) - numeric) > 1e-4


def covering_seeds(size: int, block: int) -> torch.Tensor:
    """For each position of a size x size map, how many seed positions' blocks cover it."""
    valid = size - block + 1
    per_axis = torch.tensor([sum(1 for s in range(valid) if s <= i < s + block) for i in range(size)],
                            dtype=torch.float64)
    return per_axis[:, None] * per_axis[None, :]


@pytest.mark.parametrize("size,block", [(10, 5), (21, 5), (7, 2)])
def test_dropblock_drops_the_fraction_its_block_geometry_predicts(size, block):
    rate = 0.1
    torch.manual_seed(0)
    module = DropBlock2d(rate, block).train()
    features = torch.rand(64, 64, size, size) + 1.0
    out = module(features)
    keep = out != 0
    gamma = rate / block**2 * size**2 / (size - block + 1) ** 2  # Eq. (1)
    expected = 1.0 - (1.0 - gamma) ** covering_seeds(size, block)  # a unit falls if any covering seed fires
    assert abs(float(1.0 - keep.double().mean()) - float(expected.mean())) < 0.01
    # the kept units are rescaled by (all units) / (kept units)
    torch.testing.assert_close(out[keep], features[keep] * keep.numel() / keep.sum())


def test_dropblock_on_a_map_of_block_size_drops_whole_channels_at_the_rate():
    torch.manual_seed(0)
    out = DropBlock2d(0.25, 5).train()(torch.ones(200, 50, 5, 5))
    per_channel = (out == 0).flatten(2).sum(-1)
    assert set(per_channel.unique().tolist()) <= {0, 25}
    assert abs(float((per_channel == 25).double().mean()) - 0.25) < 0.02


def test_dropblock_is_the_identity_in_evaluation_and_warms_up_linearly():
    features = torch.rand(4, 8, 10, 10)
    module = DropBlock2d(0.2, 3, warmup_steps=4)
    assert torch.equal(module.eval()(features), features)
    assert int(module.steps) == 0, "evaluation passes do not advance the schedule"
    module.train()
    rates = []
    for _ in range(6):
        rates.append(module.current_rate())
        module(features)
    assert rates == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert module.state_dict()["steps"] == 6


def test_regularisers_follow_the_references_and_vanish_in_evaluation():
    model = tiny(drop_rate=0.1, dropblock_size=5)
    kinds = [type(block.regulariser) for block in model.blocks]
    assert kinds == [nn.Dropout, nn.Dropout, DropBlock2d, DropBlock2d]
    assert all(isinstance(block.regulariser, nn.Identity) for block in tiny().blocks)
    plain = tiny()
    images = torch.randn(4, 1, 20, 20)
    torch.testing.assert_close(model.eval()(images), plain.eval()(images))
    torch.manual_seed(1)
    assert not torch.allclose(model.train()(images), plain.train()(images))


def test_build_backbone_gives_the_default_resnet12_and_clear_errors():
    with float32():
        backbone = build_backbone("resnet12", (1, 28, 28))
        assert isinstance(backbone, ResNet12) and embedding_dim(backbone, (1, 28, 28)) == 640
    assert [b.body[0].out_channels for b in backbone.blocks] == [64, 160, 320, 640]
    assert all(isinstance(b.regulariser, nn.Identity) for b in backbone.blocks)
    with pytest.raises(ValueError, match="at least 16x16"):
        build_backbone("resnet12", (1, 12, 12))
    with pytest.raises(ValueError, match="at least 16x16"):
        build_backbone("resnet12", (1,))
    with pytest.raises(ValueError, match="resnet12"):
        build_backbone("resnet-12", (3, 84, 84))
    with pytest.raises(ValueError, match="4 residual blocks"):
        ResNet12(channels=(64, 160, 320))
    with pytest.raises(ValueError, match="drop_rate"):
        ResNet12(drop_rate=1.0)
    with pytest.raises(ValueError, match="dropblock_size"):
        ResNet12(drop_rate=0.1, dropblock_size=0)
