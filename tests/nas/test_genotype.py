"""Discretisation (DARTS's top-2 edges per node by the strongest non-zero operation), the JSON form, and the
derived network against the one-shot network with a one-hot alpha."""
from __future__ import annotations

import json

import pytest
import torch

from metalab.nas.genotype import Genotype, derive_cell, edge_count
from metalab.nas.space import (
    PRUNED,
    DerivedNetwork,
    SearchNetwork,
    SpaceOptions,
    derived_weights,
    search_classifier,
)

OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]


def test_discretisation_keeps_the_two_strongest_non_zero_edges_per_node():
    # 2 nodes: node 0 reads inputs 0, 1 (rows 0, 1); node 1 reads 0, 1, 2 (rows 2, 3, 4)
    weights = torch.tensor([
        [0.70, 0.10, 0.10, 0.10],   # node 0 <- 0: "none" is the largest, but never chosen: max_pool etc. 0.10
        [0.10, 0.20, 0.30, 0.40],   # node 0 <- 1: sep_conv 0.40
        [0.05, 0.05, 0.60, 0.30],   # node 1 <- 0: skip 0.60
        [0.90, 0.04, 0.03, 0.03],   # node 1 <- 1: strongest non-zero 0.04 (dropped)
        [0.10, 0.50, 0.20, 0.20],   # node 1 <- 2: max_pool 0.50
    ])
    assert derive_cell(weights, OPS, nodes=2) == [
        [("max_pool_3x3", 0), ("sep_conv_3x3", 1)],  # node 0 keeps both of its two inputs
        [("skip_connect", 0), ("max_pool_3x3", 2)],
    ]
    assert derive_cell(weights, OPS, nodes=2, k=1) == [[("sep_conv_3x3", 1)], [("skip_connect", 0)]]
    with pytest.raises(ValueError, match=r"\[5, 4\]"):
        derive_cell(weights[:4], OPS, nodes=2)


def test_the_genotype_round_trips_through_json(tmp_path):
    genotype = Genotype([[("sep_conv_3x3", 0), ("skip_connect", 1)], [("max_pool_3x3", 0), ("sep_conv_3x3", 2)]],
                        [[("skip_connect", 0), ("max_pool_3x3", 1)], [("sep_conv_3x3", 1), ("skip_connect", 2)]],
                        [2, 3], [2, 3])
    assert Genotype.from_json(genotype.to_json()) == genotype
    assert Genotype.load(genotype.save(tmp_path / "g.json")) == genotype
    assert "n3 <- max_pool_3x3(n0) + sep_conv_3x3(n2)" in str(genotype)
    data = json.loads(genotype.to_json())
    data["normal"][0][1][1] = 2  # node 0 can read inputs 0 and 1 only
    with pytest.raises(ValueError, match="node 0 takes input"):
        Genotype.from_json(json.dumps(data))
    with pytest.raises(ValueError, match="not a genotype"):
        Genotype.from_json('{"normal": []}')


def one_hot_alpha(genotype_cell, operations, nodes):
    """alpha of a cell that is exactly ``genotype_cell``: kept edges one-hot on their operation, others on none."""
    alpha = torch.full((edge_count(nodes), len(operations)), PRUNED, dtype=torch.float64)
    first = 0
    for node, kept in enumerate(genotype_cell):
        chosen = dict((source, op) for op, source in kept)
        for source in range(node + 2):
            alpha[first + source, operations.index(chosen.get(source, "none"))] = 0.0
        first += node + 2
    return alpha


def test_the_derived_network_is_the_one_shot_network_with_a_one_hot_alpha():
    torch.manual_seed(0)
    space = SpaceOptions(operations=OPS, cells=3, channels=4, nodes=2)
    search = SearchNetwork(space, in_channels=1).double()
    genotype = Genotype([[("sep_conv_3x3", 0), ("skip_connect", 1)], [("max_pool_3x3", 0), ("sep_conv_3x3", 2)]],
                        [[("skip_connect", 0), ("max_pool_3x3", 1)], [("sep_conv_3x3", 1), ("skip_connect", 2)]],
                        [2, 3], [2, 3])
    with torch.no_grad():
        search.alpha_normal.copy_(one_hot_alpha(genotype.normal, OPS, 2))
        search.alpha_reduce.copy_(one_hot_alpha(genotype.reduce, OPS, 2))
    assert search.genotype() == genotype
    derived = DerivedNetwork(genotype, space, in_channels=1, affine=False).double()
    derived.load_state_dict(derived_weights(search, genotype))
    x = torch.randn(4, 1, 12, 12, dtype=torch.float64)
    assert torch.equal(derived(x), search(x))
    assert sum(p.numel() for p in derived.parameters()) < sum(p.numel() for p in search.parameters())


def test_search_classifier_sizes():
    model = search_classifier(SpaceOptions(cells=3, channels=4, nodes=4), (1, 8, 8), classes=10)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert model.body.alpha_normal.shape == (14, 8)  # 2 + 3 + 4 + 5 edges, the eight DARTS operations
