"""T-net: identity transformations give MAML's meta-gradient; T is meta-learned and never adapted."""
from __future__ import annotations

import pytest
import torch
from meta_gradients import assert_same_gradients, build, image_tasks, meta_gradient, sine_tasks
from torch import nn

from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.gradient.tnet import TNet
from metalab.nn.layer_transforms import add_transforms, is_transform


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


def test_a_transform_is_applied_after_its_layer():
    """y = T (W x + b): a network with a random T against the same computation by hand."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    plain = [network[0].weight.clone(), network[0].bias.clone(), network[2].weight.clone(), network[2].bias.clone()]
    assert add_transforms(network) == ["0", "2"]
    t1, t2 = torch.randn(4, 4, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    with torch.no_grad():
        network.get_submodule("0_transform").weight.copy_(t1)
        network.get_submodule("2_transform").weight.copy_(t2)
    x = torch.randn(5, 3, dtype=torch.float64)
    hidden = torch.relu((x @ plain[0].T + plain[1]) @ t1.T)
    assert torch.allclose(network(x), (hidden @ plain[2].T + plain[3]) @ t2.T, atol=1e-12)


def test_a_layer_outside_a_sequential_is_refused():
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 2)

        def forward(self, x):
            return self.layer(x)

    with pytest.raises(ValueError, match="layer"):
        add_transforms(nn.Sequential(Wrapped()))
