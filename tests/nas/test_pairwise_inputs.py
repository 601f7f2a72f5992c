"""Pairwise input weights (MetaNAS's ``--use_pairwise_input_alphas``) and drop-path on the one-shot network:
a node is the pair-weighted sum of pairs of its edges (checked against the sum written out pair by pair); a
one-hot pair selects exactly the derived cell's inputs; the genotype keeps the strongest pair; drop-path zeroes
whole examples of the non-identity candidates only in training; in MetaNAS only meta-training's inner steps."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from metalab.algorithms.gradient.metanas import MetaNAS, MetaNASOptions
from metalab.nas.genotype import Genotype, derive_cell, edge_count, input_pairs
from metalab.nas.operations import MixedOperation
from metalab.nas.space import PRUNED, DerivedNetwork, SearchNetwork, SpaceOptions, derived_weights, pair_edge_weights

sys.path.insert(0, str(Path(__file__).parents[1] / "algorithms" / "gradient"))
from test_metanas import SMALL, tasks

OPS = ["max_pool_3x3", "skip_connect", "sep_conv_3x3"]


def test_a_node_is_the_weighted_sum_of_its_input_pairs():
    torch.manual_seed(0)
    space = SpaceOptions(operations=OPS, cells=1, channels=4, nodes=3, reductions=[], pairwise_inputs=True)
    network = SearchNetwork(space, in_channels=1).double()
    cell = network.cells[0]
    weights = torch.softmax(torch.randn(edge_count(3), len(OPS), dtype=torch.float64), -1)
    pairs = torch.softmax(network.alpha_pairs_normal.detach().double() + torch.randn(3, 6, dtype=torch.float64), -1)
    s = torch.randn(2, 12, 6, 6, dtype=torch.float64)
    out = cell(s, s, weights, pair_edge_weights(pairs, 3))
    # the same cell written out: node_i = sum over pairs (a, b) of w_(a,b) * (edge_a(s_a) + edge_b(s_b))
    states, first = [cell.preprocess0(s), cell.preprocess1(s)], 0
    for node in range(3):
        edges = [cell.edges[first + j](h, weights[first + j]) for j, h in enumerate(states)]
        states.append(sum(pairs[node, p] * (edges[a] + edges[b]) for p, (a, b) in enumerate(input_pairs(node))))
        first += node + 2
    assert torch.allclose(out, torch.cat(states[2:], dim=1), atol=1e-12, rtol=0)
    # a node's trailing entries (past its C(i + 2, 2) pairs) have weight exactly 0
    assert torch.equal(torch.softmax(network.alpha_pairs_normal, -1)[0, 1:], torch.zeros(5))


def test_a_one_hot_pair_is_the_derived_cell():
    torch.manual_seed(0)
    space = SpaceOptions(operations=OPS, cells=3, channels=4, nodes=2, pairwise_inputs=True)
    search = SearchNetwork(space, in_channels=1).double()
    genotype = Genotype([[("sep_conv_3x3", 0), ("skip_connect", 1)], [("max_pool_3x3", 0), ("sep_conv_3x3", 2)]],
                        [[("skip_connect", 0), ("max_pool_3x3", 1)], [("sep_conv_3x3", 1), ("skip_connect", 2)]],
                        [2, 3], [2, 3])
    with torch.no_grad():
        for kind in ("normal", "reduce"):
            cell = getattr(genotype, kind)
            alpha = torch.full((edge_count(2), len(OPS)), PRUNED, dtype=torch.float64)
            pairs = torch.full((2, 3), PRUNED, dtype=torch.float64)
            first = 0
            for node, kept in enumerate(cell):
                chosen = dict((source, op) for op, source in kept)
                for source in range(node + 2):  # an edge outside the pair still has a real operation
                    alpha[first + source, OPS.index(chosen.get(source, "max_pool_3x3"))] = 0.0
                pairs[node, input_pairs(node).index(tuple(sorted(chosen)))] = 0.0
                first += node + 2
            getattr(search, f"alpha_{kind}").copy_(alpha)
            getattr(search, f"alpha_pairs_{kind}").copy_(pairs)
    assert search.genotype() == genotype
    derived = DerivedNetwork(genotype, space, in_channels=1, affine=False).double()
    derived.load_state_dict(derived_weights(search, genotype))
    x = torch.randn(4, 1, 12, 12, dtype=torch.float64)
    assert torch.equal(derived(x), search(x))


def test_the_genotype_keeps_the_strongest_pair():
    weights = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1],                  # node 0 <- 0, 1
                            [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05]])  # node 1 <- 0, 1, 2
    # without pairs node 1 keeps inputs 0 and 2 (the strongest operations 0.8, 0.9); pair (1, 2) overrides that
    assert derive_cell(weights, OPS, nodes=2)[1] == [("skip_connect", 0), ("max_pool_3x3", 2)]
    pairs = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.2, 0.5]])  # node 1's pairs (0, 1), (0, 2), (1, 2)
    assert derive_cell(weights, OPS, nodes=2, pair_weights=pairs) == [
        [("sep_conv_3x3", 0), ("max_pool_3x3", 1)], [("sep_conv_3x3", 1), ("max_pool_3x3", 2)]]


def test_drop_path_zeroes_whole_examples_of_the_non_identity_candidates():
    torch.manual_seed(0)
    mixed = MixedOperation(["skip_connect", "sep_conv_3x3"], channels=2, stride=1).double().eval()
    x = torch.randn(64, 2, 5, 5, dtype=torch.float64)
    weights = torch.tensor([0.25, 0.75], dtype=torch.float64)
    conv = mixed.ops[1](x)
    out = mixed(x, weights, drop_prob=0.5)
    kept = [torch.allclose(o, 0.25 * xi + 0.75 * 2.0 * ci, atol=1e-12) for o, xi, ci in zip(out, x, conv)]
    dropped = [torch.allclose(o, 0.25 * xi, atol=1e-12) for o, xi in zip(out, x)]
    assert all(k != d for k, d in zip(kept, dropped)) and 16 < sum(kept) < 48  # each example one or the other
    assert torch.equal(mixed(x, weights), mixed(x, weights, drop_prob=0.0))
    network = SearchNetwork(SpaceOptions(operations=OPS, cells=2, channels=4, nodes=2), in_channels=1).eval()
    network.drop_prob = 0.5
    image = torch.randn(3, 1, 8, 8)
    first = network(image)
    network.drop_prob = 0.0
    assert torch.equal(first, network(image))  # evaluation mode never drops


def test_metanas_drops_paths_in_meta_training_only():
    options = {**SMALL, "operations": OPS, "pairwise_inputs": True}
    predictions, losses = [], []
    for drop in (0.0, 0.5):
        torch.manual_seed(0)
        learner = MetaNAS(MetaNASOptions(**{**options, "drop_path": drop}), (1, 16, 16)).double()
        assert {"body.alpha_pairs_normal", "body.alpha_pairs_reduce"} <= set(learner.adapted_names())
        predictions.append(learner.predict(tasks(count=1, seed=3, dtype=torch.float64)))
        losses.append(learner.meta_step(tasks(count=1, dtype=torch.float64))["loss"])
        grads = learner.parameters_by_name()
        assert float(grads["body.alpha_pairs_normal"].grad[1, :3].abs().min()) > 0  # the pairs meta-learn
    assert torch.equal(predictions[0], predictions[1])  # evaluation: no drop-path
    assert not torch.equal(losses[0], losses[1])  # meta-training's inner steps drop paths
