"""Few-shot graph neural network (Garcia & Bruna 2018).

One graph per query: the S support nodes and the query node. A node's input is its embedding
concatenated with its label (one-hot for support, uniform 1/W for the query). Each layer learns an
adjacency from an MLP on |x_i - x_j| (softmax over the neighbours j != i), applies a graph
convolution on the operator family {I, A} (x -> [x, A x] -> linear) and concatenates its output to
the node features (dense connections). A last graph convolution maps the query node to W logits.
Everything after the backbone is permutation-equivariant in the nodes, so the query's logits do
not depend on the order of the support items.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.algorithms.metric.base import BackboneOptions, EpisodicMetricLearner
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.backbones import build_backbone, embedding_dim
from metalab.nn.execution import SpeedOptions


@dataclass
class GNNOptions(BackboneOptions):
    #: nf of the paper's code: each graph layer adds nf / 2 features; the adjacency MLP has
    #: hidden widths 2nf, 2nf, nf, nf.
    graph_features: int = 96
    #: graph-convolution layers before the final one.
    graph_layers: int = 2
    #: label channels of a node = the most ways the GNN classifies (set it to task.ways).
    ways: int = 5
    #: in evaluation, graphs (queries) processed at once, to bound memory.
    eval_chunk: int = 256
    #: in meta-training, graphs per task: that many of the task's queries, drawn at random (the
    #: paper's episodes have 1 unlabelled node per task); 0 = one graph for every query.
    train_graphs_per_task: int = 0


def _linear_bn(in_features: int, out_features: int) -> nn.ModuleList:
    return nn.ModuleList([nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features)])


def _apply(layer: nn.ModuleList, x: Tensor) -> Tensor:
    """Linear + BatchNorm over the last dim of x [..., F] + leaky ReLU."""
    linear, norm = layer
    return F.leaky_relu(norm(linear(x).flatten(0, -2)).view(*x.shape[:-1], -1))


class LearnedAdjacency(nn.Module):
    """A [B, N, N]: row-softmax over j != i of MLP(|x_i - x_j|), nodes x [B, N, F]."""

    def __init__(self, in_features: int, nf: int) -> None:
        super().__init__()
        widths = [in_features, 2 * nf, 2 * nf, nf, nf]
        self.layers = nn.ModuleList(_linear_bn(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(nf, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = (x.unsqueeze(2) - x.unsqueeze(1)).abs()  # [B, N, N, F]
        for layer in self.layers:
            h = _apply(cast(nn.ModuleList, layer), h)  # the _linear_bn pairs (a ModuleList's items are typed Module)
        scores = self.out(h).squeeze(-1)
        nodes = x.shape[1]
        self_edge = torch.eye(nodes, dtype=torch.bool, device=x.device)
        return scores.masked_fill(self_edge, float("-inf")).softmax(-1)


class GraphConv(nn.Module):
    """x [B, N, F], A [B, N, N] -> Linear([x, A x]) [B, N, out] (+ BN and leaky ReLU unless ``last``)."""

    def __init__(self, in_features: int, out_features: int, last: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * in_features, out_features)
        self.norm = None if last else nn.BatchNorm1d(out_features)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        out = self.linear(torch.cat([x, adjacency @ x], -1))
        if self.norm is None:
            return out
        return F.leaky_relu(self.norm(out.flatten(0, 1)).view_as(out))


class FewShotGNN(nn.Module):
    """Node features [B, N, F0] -> logits [B, ways] of the last node (the query)."""

    def __init__(self, in_features: int, ways: int, nf: int, layers: int) -> None:
        super().__init__()
        growth = nf // 2
        self.adjacencies = nn.ModuleList(LearnedAdjacency(in_features + i * growth, nf) for i in range(layers + 1))
        self.convs = nn.ModuleList(GraphConv(in_features + i * growth, growth) for i in range(layers))
        self.final = GraphConv(in_features + layers * growth, ways, last=True)

    def forward(self, nodes: Tensor) -> Tensor:
        for adjacency, conv in zip(self.adjacencies, self.convs):
            nodes = torch.cat([nodes, conv(nodes, adjacency(nodes))], -1)
        return self.final(nodes, self.adjacencies[-1](nodes))[:, -1]


@register("gnn")
class GraphNetwork(EpisodicMetricLearner):
    """The graph's label channels fix the ways: ``learner.ways`` (set it to the training ways);
    tasks with fewer ways are classified too (the spare label channels stay empty)."""

    options: GNNOptions

    def __init__(self, options: GNNOptions, input_shape: tuple[int, ...], speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.ways < 2:
            raise ValueError(f"learner.ways must be >= 2 (the ways the GNN is built for), got {options.ways}")
        self.backbone = build_backbone(options.backbone, input_shape, options.hidden)
        size = embedding_dim(self.backbone, input_shape) + options.ways
        self.gnn = FewShotGNN(size, options.ways, options.graph_features, options.graph_layers)

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        graphs = self.options.train_graphs_per_task
        queries = batch.query_y.shape[1]
        if 0 < graphs < queries:
            # a random subset of each task's queries, drawn from torch's generator (part of a checkpoint)
            chosen = torch.rand(batch.query_y.shape, device=batch.query_y.device).argsort(1)[:, :graphs]
            image_index = chosen.view(*chosen.shape, *([1] * (batch.query_x.dim() - 2)))
            batch = dataclasses.replace(
                batch,
                query_x=batch.query_x.gather(1, image_index.expand(-1, -1, *batch.query_x.shape[2:])),
                query_y=batch.query_y.gather(1, chosen),
            )
        return super().meta_step(batch)

    def head(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        channels = self.options.ways
        if ways > channels:
            raise ValueError(f"this GNN is built for at most {channels}-way tasks (learner.ways) and got {ways} ways; "
                             f"train one with learner.ways >= {ways}")
        tasks, queries = query.shape[:2]
        support_nodes = torch.cat([support, F.one_hot(support_y, channels).to(support.dtype)], -1)  # [T, S, D+C]
        uniform = torch.zeros(tasks, queries, channels, dtype=query.dtype, device=query.device)
        uniform[..., :ways] = 1.0 / ways
        query_nodes = torch.cat([query, uniform], -1)  # [T, Q, D+C]
        graphs = torch.cat([
            support_nodes.unsqueeze(1).expand(-1, queries, -1, -1),
            query_nodes.unsqueeze(2),
        ], 2).flatten(0, 1)  # [T*Q, S+1, D+C]: one graph per query, the query node last
        if self.training:
            logits = self.gnn(graphs)
        else:
            logits = torch.cat([self.gnn(chunk) for chunk in graphs.split(self.options.eval_chunk)])
        return logits.view(tasks, queries, channels)[..., :ways]
