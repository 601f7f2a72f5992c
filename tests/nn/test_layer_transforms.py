"""Transformation layers (T-net, MT-net): T follows its layer, y = T (W x + b), beside it in the Sequential."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from metalab.nn.layer_transforms import add_transforms


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
