"""T-net: identity transformations give MAML's meta-gradient; T is meta-learned and never adapted."""
from __future__ import annotations

import pytest
import torch
from meta_gradients import assert_same_gradients, build, image_tasks, meta_gradient, sine_tasks
from torch import nn

from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.gradient.tnet import TNet
from metalab.nn.layer_transforms import is_transform


@pytest.mark.parametrize("backbone", ["conv4", "mlp"])
def test_identity_transforms_are_maml(backbone):
    batch = image_tasks() if backbone == "conv4" else sine_tasks()
    options = dict(backbone=backbone, inner_steps=2, inner_lr=0.3)
    learner = build(TNet, **options)
    ours = meta_gradient(learner, batch)
    maml = meta_gradient(build(MAML, **options), batch)
    assert_same_gradients({name: grad for name, grad in ours.items() if not is_transform(name)}, maml)
    transforms = {name: grad for name, grad in ours.items() if is_transform(name)}  # T is meta-learned
    assert len(transforms) == (5 if backbone == "conv4" else 3)
    assert all(float(grad.abs().max()) > 0 for grad in transforms.values())


def test_transforms_follow_every_layer_and_are_not_adapted():
    learner = build(TNet)
    assert learner.transformed_layers == [f"body.blocks.{i}.0" for i in range(4)] + ["head"]
    block = learner.network.get_submodule("body.blocks.0")
    assert [type(m) for m in block] == [nn.Conv2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert torch.equal(block[1].weight[:, :, 0, 0], torch.eye(4, dtype=torch.float64))
    assert not any(is_transform(name) for name in learner.adapted_names())
    batch = image_tasks()
    fast = learner.adapt_tasks(batch.support_x, batch.support_y, training=False)
    params = learner.parameters_by_name()
    for name, value in fast.items():  # T comes back untouched (shared, no task dimension), W adapted
        assert torch.equal(value, params[name]) if is_transform(name) else value.shape[1:] == params[name].shape
