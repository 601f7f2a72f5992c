"""Genotypes: the discrete architecture a search derives, its JSON form, and the discretisation rule.

A genotype lists, for each intermediate node of the normal and the reduction cell, its two incoming edges as
(operation, input) pairs; inputs 0 and 1 are the outputs of the two previous cells, input j >= 2 is the
cell's intermediate node j - 2. The cell's output concatenates the nodes of ``*_concat``.

Discretisation (DARTS, section 2.4): each intermediate node keeps the k = 2 incoming edges whose strongest
non-zero operation, max_{o != none} softmax(alpha_edge)_o, is the largest; each kept edge becomes that
strongest operation. With pairwise input weights (MetaNAS), each node keeps instead the two inputs of its
strongest pair, each with its strongest non-zero operation.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from metalab.nas.operations import OPERATIONS, ZERO

#: (operation name, input index) of one kept edge
Edge = tuple[str, int]


@dataclass(frozen=True)
class Genotype:
    """A derived cell pair: per intermediate node, its kept edges (``edges_per_node`` of them)."""

    normal: list[list[Edge]]
    reduce: list[list[Edge]]
    normal_concat: list[int] = field(default_factory=list)
    reduce_concat: list[int] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return len(self.normal)

    def to_json(self) -> str:
        fields = {"normal": [[list(e) for e in node] for node in self.normal],
                  "normal_concat": list(self.normal_concat),
                  "reduce": [[list(e) for e in node] for node in self.reduce],
                  "reduce_concat": list(self.reduce_concat)}
        return "{\n" + ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in fields.items()) + "\n}"

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        data = json.loads(text)
        try:
            cells = {kind: [[(str(op), int(source)) for op, source in node] for node in data[kind]]
                     for kind in ("normal", "reduce")}
            genotype = cls(cells["normal"], cells["reduce"], [int(i) for i in data["normal_concat"]],
                           [int(i) for i in data["reduce_concat"]])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a genotype (keys normal, normal_concat, reduce, reduce_concat of "
                             f"[[operation, input], ...] per node): {error}") from None
        genotype.check()
        return genotype

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        return cls.from_json(Path(path).read_text())

    def check(self) -> None:
        """Every edge names a known operation and an earlier input; the two cells have the same node count."""
        if len(self.normal) != len(self.reduce):
            raise ValueError(f"the normal cell has {len(self.normal)} nodes and the reduction cell "
                             f"{len(self.reduce)}; a genotype's cells have the same number")
        for kind, cell in (("normal", self.normal), ("reduce", self.reduce)):
            for node, edges in enumerate(cell):
                unknown = [op for op, _ in edges if op not in OPERATIONS]
                if unknown:
                    raise ValueError(f"{kind} node {node}: unknown operations {unknown}; "
                                     f"known: {', '.join(OPERATIONS)}")
                if any(not 0 <= source < node + 2 for _, source in edges):
                    raise ValueError(f"{kind} node {node} takes input from {[s for _, s in edges]}; node {node} can "
                                     f"read the two cell inputs and the nodes before it (0..{node + 1})")

    def __str__(self) -> str:
        def cell(nodes: list[list[Edge]]) -> str:
            return "; ".join(f"n{i + 2} <- " + " + ".join(f"{op}(n{source})" for op, source in edges)
                             for i, edges in enumerate(nodes))
        return f"normal: {cell(self.normal)}\nreduce: {cell(self.reduce)}"


def edge_count(nodes: int) -> int:
    """Mixed edges of a cell with ``nodes`` intermediate nodes: node i reads the 2 + i earlier states."""
    return sum(2 + i for i in range(nodes))


def input_pairs(node: int) -> list[tuple[int, int]]:
    """The pairs (a, b), a < b, of the 2 + ``node`` inputs of intermediate node ``node``, in alpha_pairs' order."""
    return [(a, b) for a in range(node + 2) for b in range(a + 1, node + 2)]


def derive_cell(weights: Tensor, operations: Sequence[str], nodes: int, k: int = 2,
                pair_weights: Tensor | None = None) -> list[list[Edge]]:
    """The kept edges of one cell from its normalised alpha [E, O] (rows in edge order: node 0's inputs 0, 1,
    node 1's inputs 0, 1, 2, ...): per node, the ``k`` inputs with the strongest non-zero operation, or with
    ``pair_weights`` [nodes, P] (each node's softmax over its input pairs a < b, in the order (0, 1), (0, 2), ...,
    (1, 2), ...) the two inputs of the strongest pair."""
    if weights.shape != (edge_count(nodes), len(operations)):
        raise ValueError(f"alpha of a {nodes}-node cell over {len(operations)} operations is "
                         f"[{edge_count(nodes)}, {len(operations)}], got {list(weights.shape)}")
    allowed = torch.tensor([op != ZERO for op in operations])
    strength = weights.detach().masked_fill(~allowed, float("-inf"))
    cell, start = [], 0
    for node in range(nodes):
        rows = strength[start: start + node + 2]  # [inputs, O]
        best, best_op = rows.max(dim=1)
        if pair_weights is not None:
            pairs = input_pairs(node)
            kept = list(pairs[int(pair_weights[node, : len(pairs)].detach().argmax())])
        else:
            kept = sorted(range(node + 2), key=lambda j: (-float(best[j]), j))[: min(k, node + 2)]
        cell.append([(operations[int(best_op[j])], j) for j in sorted(kept)])
        start += node + 2
    return cell


def derive_genotype(normal: Tensor, reduce: Tensor, operations: Sequence[str], nodes: int, k: int = 2,
                    pairs: tuple[Tensor, Tensor] | None = None) -> Genotype:
    """The genotype of normalised alphas ``normal`` and ``reduce`` [E, O] (and the pair weights of the two cells,
    [nodes, P] each, if any); every intermediate node is in the output concatenation, as in DARTS."""
    concat = list(range(2, 2 + nodes))
    pair_normal, pair_reduce = pairs if pairs is not None else (None, None)
    return Genotype(derive_cell(normal, operations, nodes, k, pair_normal),
                    derive_cell(reduce, operations, nodes, k, pair_reduce), concat, list(concat))
