"""The DARTS search space: a stack of normal and reduction cells with mixed edges, and the derived network.

A cell (Liu et al. 2019, section 2.1) takes the outputs of the two previous cells (each first brought to C
channels: a 1x1 ReLU-conv-BN, or a factorized reduce when the previous cell halved the size), has ``nodes``
intermediate nodes, node i the sum of a mixed edge from each of the 2 + i states before it, and outputs the
concatenation of its intermediate nodes (nodes * C channels). A reduction cell's edges from the two inputs
have stride 2 and it doubles C. The network: a 3x3 conv stem (``stem_multiplier`` * C channels, BatchNorm),
the cells, global average pooling; the classifier head is separate (``head``).

The architecture is two matrices of logits, ``alpha_normal`` and ``alpha_reduce`` [E, O] (E edges of a cell,
O operations), shared by all cells of a kind; an edge's weights are softmax(alpha / T), T a temperature
(1 in DARTS; MetaNAS anneals it toward 0 within each task, so that the mixture nears one-hot).

Pairwise input weights (``pairwise_inputs``, the MetaNAS authors' ``--use_pairwise_input_alphas``): node i
also has logits over the C(i + 2, 2) pairs of its inputs, ``alpha_pairs_normal`` / ``alpha_pairs_reduce``
[nodes, C(nodes + 1, 2)] (a node's unused trailing entries are fixed at ``PRUNED``, weight exactly 0), and is

    node_i = sum_{pairs (a, b)} softmax(alpha_pairs_i / T)_(a,b) * (edge_a(s_a) + edge_b(s_b)),

so that annealing T makes each node pick two inputs as the discrete cell does; the genotype keeps the
strongest pair (each input with its strongest operation).

Drop-path (``drop_prob``, set per forward like the temperature; the authors' 0.2 in meta-training): in training
mode every candidate output except the identity is zeroed per example with that probability and the kept ones
are divided by 1 - p (DARTS's drop-path on the one-shot network, as in the authors' ``MixedOp``).

Sizes (:class:`SpaceOptions`): the paper's CIFAR-10 search uses 8 cells of C = 16 with 4 nodes; metalab's
presets scale it to the inputs here (8x8 digits: 3 cells of C = 8; 28x28 Omniglot: 4 cells of C = 8 to 16;
84x84: 5 cells), see ``docs/nas.md``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn

from metalab.nas.genotype import Genotype, derive_genotype, edge_count, input_pairs
from metalab.nas.operations import (
    DARTS_OPERATIONS,
    FactorizedReduce,
    MixedOperation,
    ReLUConvBN,
    build_operation,
    check_operations,
)

#: an alpha entry this low has softmax weight exactly 0 in float32 and float64 (MetaNAS's pruning value)
PRUNED = -1e9


@dataclass
class SpaceOptions:
    """The size of the search space (hyperparameters of a search or of MetaNAS)."""

    #: candidate operations of every edge (alpha's columns, in this order); DARTS's set by default.
    operations: list[str] = field(default_factory=lambda: list(DARTS_OPERATIONS))
    #: cells in the network (DARTS search: 8).
    cells: int = 3
    #: channels C of the first cells (doubled by each reduction cell; DARTS search: 16).
    channels: int = 8
    #: intermediate nodes per cell (DARTS: 4; MetaNAS: 3).
    nodes: int = 4
    #: indices of the reduction cells (None: DARTS's cells // 3 and 2 * cells // 3).
    reductions: list[int] | None = None
    #: stem channels = stem_multiplier * channels.
    stem_multiplier: int = 3
    #: weights over the pairs of each node's inputs (module docstring; MetaNAS's pairwise input alphas).
    pairwise_inputs: bool = False


def check_space(space: SpaceOptions, prefix: str = "") -> None:
    """Refuse sizes that build no network, naming the option."""
    check_operations(space.operations)
    for name in ("cells", "channels", "nodes", "stem_multiplier"):
        if getattr(space, name) < 1:
            raise ValueError(f"{prefix}{name} must be >= 1, got {getattr(space, name)}")
    if space.channels % 2:
        raise ValueError(f"{prefix}channels must be even (a reduction edge's factorized reduce halves it), "
                         f"got {space.channels}")
    bad = [i for i in reduction_cells(space) if not 0 <= i < space.cells]
    if bad:
        raise ValueError(f"{prefix}reductions must be cell indices in 0..{space.cells - 1}, got {space.reductions}")


def reduction_cells(space: SpaceOptions) -> list[int]:
    if space.reductions is not None:
        return sorted(set(space.reductions))
    return sorted({space.cells // 3, 2 * space.cells // 3}) if space.cells > 1 else []


class CellSizes(NamedTuple):
    """The channels of one cell of the macro-structure (the order of the cells' constructor arguments)."""

    c_prev_prev: int
    c_prev: int
    c: int
    reduction: bool
    reduction_prev: bool
    out_channels: int


def cell_sizes(space: SpaceOptions, outputs: Sequence[int]) -> list[CellSizes]:
    """Each cell's sizes: a stem of stem_multiplier * C channels, C doubled by each reduction cell, a cell's
    output ``outputs[reduction]`` * C channels (the nodes it concatenates; [normal, reduction])."""
    reductions = reduction_cells(space)
    c = space.channels
    c_pp = c_p = space.stem_multiplier * c
    reduction_prev, sizes = False, []
    for i in range(space.cells):
        reduction = i in reductions
        c = c * 2 if reduction else c
        out = outputs[int(reduction)] * c
        sizes.append(CellSizes(c_pp, c_p, c, reduction, reduction_prev, out))
        c_pp, c_p, reduction_prev = c_p, out, reduction
    return sizes


def pair_edge_weights(pair_weights: Tensor, nodes: int) -> Tensor:
    """Each edge's total weight from the pairs containing it: [nodes, P] (softmax over each node's pairs) ->
    [E] (edge order: node 0's inputs 0, 1, node 1's inputs 0, 1, 2, ...), since
    sum_pairs w_(a,b) (e_a + e_b) = sum_a e_a * sum_{pairs containing a} w."""
    out = []
    for node in range(nodes):
        pairs = input_pairs(node)
        for source in range(node + 2):
            out.append(sum((pair_weights[node, p] for p, pair in enumerate(pairs) if source in pair),
                           torch.zeros((), dtype=pair_weights.dtype)))
    return torch.stack(out)


class SearchCell(nn.Module):
    """One cell with a mixed operation on every edge: (s0, s1, weights [E, O], input weights [E] or None) ->
    [B, nodes * C, H', W']."""

    def __init__(self, space: SpaceOptions, c_prev_prev: int, c_prev: int, c: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        self.reduction, self.nodes = reduction, space.nodes
        self.preprocess0: nn.Module = (FactorizedReduce(c_prev_prev, c, affine=False) if reduction_prev
                                       else ReLUConvBN(c_prev_prev, c, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            MixedOperation(space.operations, c, 2 if reduction and j < 2 else 1)
            for i in range(space.nodes) for j in range(2 + i))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, inputs: Tensor | None = None,
                drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        edge = 0
        for _ in range(self.nodes):
            outputs = [self.edges[edge + j](h, weights[edge + j], drop_prob) for j, h in enumerate(states)]
            if inputs is not None:
                outputs = [inputs[edge + j] * out for j, out in enumerate(outputs)]
            node = sum(outputs, torch.zeros((), dtype=s1.dtype))
            edge += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


def _stem(c_in: int, c_stem: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))


class SearchNetwork(nn.Module):
    """The one-shot network of DARTS: x [B, C_in, H, W] -> features [B, out_features] (global average pool).

    Parameters ``alpha_normal`` and ``alpha_reduce`` [E, O] (and with ``pairwise_inputs`` ``alpha_pairs_normal``
    and ``alpha_pairs_reduce`` [nodes, P]) are the architecture; every other parameter is a weight
    (:func:`weight_names`). ``temperature`` divides alpha before the softmax; ``drop_prob`` is the drop-path
    probability in training mode.
    """

    def __init__(self, space: SpaceOptions, in_channels: int) -> None:
        super().__init__()
        check_space(space)
        self.space = space
        self.operations = list(space.operations)
        self.temperature = 1.0
        self.drop_prob = 0.0
        self.stem = _stem(in_channels, space.stem_multiplier * space.channels)
        sizes = cell_sizes(space, [space.nodes] * 2)
        self.cells = nn.ModuleList(SearchCell(space, *size[:5]) for size in sizes)
        self.out_features = sizes[-1].out_channels
        edges, ops = edge_count(space.nodes), len(space.operations)
        # DARTS initialises alpha at 1e-3 * N(0, 1): nearly uniform mixtures
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(edges, ops))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(edges, ops))
        if space.pairwise_inputs:
            self.alpha_pairs_normal = nn.Parameter(self._pair_logits(space.nodes))
            self.alpha_pairs_reduce = nn.Parameter(self._pair_logits(space.nodes))

    @staticmethod
    def _pair_logits(nodes: int) -> Tensor:
        """1e-3 * N(0, 1) for each node's pairs, ``PRUNED`` (weight exactly 0) past them: [nodes, C(nodes + 1, 2)]."""
        width = len(input_pairs(nodes - 1))
        logits = torch.full((nodes, width), PRUNED)
        for node in range(nodes):
            logits[node, : len(input_pairs(node))] = 1e-3 * torch.randn(len(input_pairs(node)))
        return logits

    def pair_weights(self) -> tuple[Tensor, Tensor] | None:
        """softmax(alpha_pairs / T) of the normal and the reduction cell, [nodes, P] each (None without
        ``pairwise_inputs``)."""
        if not self.space.pairwise_inputs:
            return None
        return (torch.softmax(self.alpha_pairs_normal / self.temperature, dim=-1),
                torch.softmax(self.alpha_pairs_reduce / self.temperature, dim=-1))

    def edge_weights(self) -> tuple[Tensor, Tensor]:
        """softmax(alpha / T) of the normal and the reduction cell, [E, O] each."""
        return (torch.softmax(self.alpha_normal / self.temperature, dim=-1),
                torch.softmax(self.alpha_reduce / self.temperature, dim=-1))

    def forward(self, x: Tensor) -> Tensor:
        normal, reduce = self.edge_weights()
        pairs = self.pair_weights()
        inputs = None if pairs is None else [pair_edge_weights(w, self.space.nodes) for w in pairs]
        p = self.drop_prob if self.training else 0.0
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = 1 if cell.reduction else 0
            s0, s1 = s1, cell(s0, s1, (normal, reduce)[kind], None if inputs is None else inputs[kind], p)
        return s1.mean(dim=(2, 3))

    def genotype(self, k: int = 2) -> Genotype:
        """The derived architecture (DARTS's discretisation of softmax(alpha), at temperature 1; with pairwise
        input weights, each node's strongest pair of inputs)."""
        normal, reduce = torch.softmax(self.alpha_normal, -1), torch.softmax(self.alpha_reduce, -1)
        pairs = None
        if self.space.pairwise_inputs:
            pairs = (torch.softmax(self.alpha_pairs_normal, -1), torch.softmax(self.alpha_pairs_reduce, -1))
        return derive_genotype(normal, reduce, self.operations, self.space.nodes, k, pairs)


def alpha_names(module: nn.Module) -> list[str]:
    """Qualified names of the architecture parameters of ``module`` (any depth)."""
    return [name for name, _ in module.named_parameters() if name.rsplit(".", 1)[-1].startswith("alpha_")]


def weight_names(module: nn.Module) -> list[str]:
    """Qualified names of every parameter of ``module`` that is not an architecture parameter."""
    alphas = set(alpha_names(module))
    return [name for name, _ in module.named_parameters() if name not in alphas]


def search_classifier(space: SpaceOptions, input_shape: Sequence[int], classes: int) -> nn.Sequential:
    """body (:class:`SearchNetwork`) + head (Linear to ``classes``)."""
    body = SearchNetwork(space, int(input_shape[0]))
    return nn.Sequential(OrderedDict(body=body, head=nn.Linear(body.out_features, classes)))


# --------------------------------------------------------------------------------- the derived network
class DerivedCell(nn.Module):
    """A cell of a genotype: node i = the sum of its kept edges' operations."""

    def __init__(self, edges: list[list[tuple[str, int]]], concat: Sequence[int], c_prev_prev: int, c_prev: int,
                 c: int, reduction: bool, reduction_prev: bool, affine: bool) -> None:
        super().__init__()
        self.reduction, self.concat = reduction, list(concat)
        self.preprocess0: nn.Module = (FactorizedReduce(c_prev_prev, c, affine) if reduction_prev
                                       else ReLUConvBN(c_prev_prev, c, 1, 1, 0, affine))
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0, affine)
        self.sources = [[source for _, source in node] for node in edges]
        self.ops = nn.ModuleList(nn.ModuleList(
            build_operation(op, c, 2 if reduction and source < 2 else 1, affine, search=not affine)
            for op, source in node) for node in edges)

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for sources, ops in zip(self.sources, cast(Sequence[nn.ModuleList], self.ops)):
            states.append(sum((op(states[source]) for op, source in zip(ops, sources)),
                              torch.zeros((), dtype=s1.dtype)))
        return torch.cat([states[i] for i in self.concat], dim=1)


class DerivedNetwork(nn.Module):
    """The network of a genotype on the macro-structure of ``space``: x [B, C_in, H, W] -> [B, out_features].

    ``affine``: BatchNorm with affine parameters (retraining, as in DARTS) or without (the search network's
    BatchNorm; :func:`derived_weights` then maps a search network's weights onto it exactly).
    """

    def __init__(self, genotype: Genotype, space: SpaceOptions, in_channels: int, affine: bool = True) -> None:
        super().__init__()
        genotype.check()
        if genotype.nodes != space.nodes:
            raise ValueError(f"the genotype has {genotype.nodes} nodes per cell and the space {space.nodes}; "
                             f"set nodes={genotype.nodes}")
        self.stem = _stem(in_channels, space.stem_multiplier * space.channels)
        sizes = cell_sizes(space, [len(genotype.normal_concat), len(genotype.reduce_concat)])
        self.cells = nn.ModuleList(
            DerivedCell(genotype.reduce if size.reduction else genotype.normal,
                        genotype.reduce_concat if size.reduction else genotype.normal_concat,
                        *size[:5], affine=affine) for size in sizes)
        self.out_features = sizes[-1].out_channels

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1.mean(dim=(2, 3))


def derived_classifier(genotype: Genotype, space: SpaceOptions, input_shape: Sequence[int], classes: int,
                       affine: bool = True) -> nn.Sequential:
    """body (:class:`DerivedNetwork`) + head (Linear to ``classes``)."""
    body = DerivedNetwork(genotype, space, int(input_shape[0]), affine)
    return nn.Sequential(OrderedDict(body=body, head=nn.Linear(body.out_features, classes)))


def derived_names(search: SearchNetwork, genotype: Genotype) -> dict[str, str]:
    """Parameter and buffer names of a :class:`DerivedNetwork` of ``genotype`` -> the names in ``search`` they
    come from: the stem, the preprocessing, and each kept edge's operation (MetaNAS's pruning to the discrete
    architecture keeps the meta-learned weights)."""
    keys = list(search.state_dict())
    out = {key: key for key in keys
           if key.startswith("stem.") or (key.startswith("cells.") and key.split(".")[2].startswith("preprocess"))}
    for c, cell in enumerate(search.cells):
        edges = genotype.reduce if cell.reduction else genotype.normal
        first = 0
        for node, kept in enumerate(edges):
            for k, (op, source) in enumerate(kept):
                inner = f"cells.{c}.edges.{first + source}.ops.{search.operations.index(op)}."
                out.update({f"cells.{c}.ops.{node}.{k}.{key[len(inner):]}": key for key in keys
                            if key.startswith(inner)})
            first += node + 2
    return out


def derived_weights(search: SearchNetwork, genotype: Genotype, prefix: str = "") -> dict[str, Tensor]:
    """The state of a :class:`DerivedNetwork` (``affine=False``) of ``genotype`` taken from ``search``
    (:func:`derived_names`); keys prefixed with ``prefix``."""
    state = search.state_dict()
    return {prefix + derived: state[source] for derived, source in derived_names(search, genotype).items()}
