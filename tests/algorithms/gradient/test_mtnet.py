"""MT-net: masks that are all on give T-net; masks choose the adapted units; the masks are meta-learned."""
from __future__ import annotations

import pytest
import torch
from meta_gradients import assert_same_gradients, build, image_tasks, meta_gradient, sine_tasks

from metalab.algorithms.gradient.mtnet import MTNet, UnitMasks
from metalab.algorithms.gradient.tnet import TNet


@pytest.mark.parametrize("backbone", ["conv4", "mlp"])
def test_masks_all_on_are_tnet(backbone):
    """zeta = 20: every sampled mask is 1 (the logistic noise is clamped to |l| < 14), so MT-net steps as T-net."""
    batch = image_tasks() if backbone == "conv4" else sine_tasks()
    options = dict(backbone=backbone, inner_steps=2, inner_lr=0.3)
    learner = build(MTNet, mask_logit_init=20.0, **options)
    assert_same_gradients(meta_gradient(learner, batch), meta_gradient(build(TNet, **options), batch))


def test_masked_units_keep_their_initial_weights_and_the_logits_learn():
    learner = build(MTNet, inner_steps=2, inner_lr=0.3)
    with torch.no_grad():
        for zeta in learner.mask_logits.values():  # units 0 and 2 off, 1 and 3 on, in every layer
            zeta.copy_(torch.tensor([-20.0, 20.0, -20.0, 20.0][:zeta.numel()], dtype=zeta.dtype))
    batch = image_tasks()
    fast = learner.adapt_tasks(batch.support_x, batch.support_y, training=False)
    params = learner.parameters_by_name()
    for name in ("body.blocks.1.0.weight", "body.blocks.1.0.bias", "body.blocks.1.1.weight", "head.weight"):
        moved = (fast[name] - params[name]).detach().abs()
        per_unit = moved.flatten(2).amax(-1) if moved.dim() > 2 else moved  # [T, units]
        on = [1, 3] if per_unit.shape[1] == 4 else [1]
        off = [unit for unit in range(per_unit.shape[1]) if unit not in on]
        assert float(per_unit[:, off].max()) == 0 and float(per_unit[:, on].min()) > 0, name
    learner.meta_step(batch)
    assert all(p.grad is not None and float(p.grad.abs().max()) > 0 for p in learner.mask_logits.values())


def test_the_relaxed_mask_is_the_two_class_gumbel_softmax_with_straight_through():
    zeta = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    rule = UnitMasks(0.1, {}, {"layer": zeta}, temperature=0.5)
    torch.manual_seed(0)
    mask = rule.masks({"layer": zeta}, tasks=4)["layer"]
    logistic = rule.noise["layer"]
    # the authors' form: softmax over [zeta + g1, 0 + g2] / tau with l = g1 - g2
    two_class = torch.stack([zeta + logistic, torch.zeros_like(logistic)], -1)
    soft = torch.softmax(two_class / 0.5, -1)[..., 0]
    hard = (soft == torch.softmax(two_class / 0.5, -1).amax(-1)).double()
    assert torch.equal(mask.detach(), hard)
    weights = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(torch.autograd.grad((mask * weights).sum(), zeta)[0],
                          torch.autograd.grad((soft * weights).sum(), zeta)[0], atol=1e-12)
    again = rule.masks({"layer": zeta}, tasks=4)["layer"]  # the same draw for every step of the adaptation
    assert torch.equal(again, mask)


def test_mask_options_are_checked():
    with pytest.raises(ValueError, match="mask_temperature"):
        build(MTNet, mask_temperature=0.0)
    assert sine_tasks() is not None
