"""Relation Network and few-shot GNN: outputs do not depend on the order of the support items."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from metalab.algorithms.metric.gnn import GNNOptions, GraphNetwork, LearnedAdjacency
from metalab.algorithms.metric.relation import RelationNetwork, RelationOptions
from metalab.data.episodes import EpisodeSampler
from metalab.data.task import Task
from metalab.nn.class_pooling import class_sums


def shuffled_support(batch: Task, seed: int) -> Task:
    """The same tasks with every task's support items (and their labels) in a random order."""
    generator = torch.Generator().manual_seed(seed)
    orders = torch.stack([torch.randperm(batch.support_y.shape[1], generator=generator) for _ in range(len(batch))])
    gather_x = orders.view(*orders.shape, 1, 1, 1).expand_as(batch.support_x)
    return Task(batch.support_x.gather(1, gather_x), batch.support_y.gather(1, orders), batch.query_x, batch.query_y,
                batch.classes)


def learners():
    torch.manual_seed(0)
    yield RelationNetwork(RelationOptions(name="relation"), (1, 28, 28))
    yield GraphNetwork(GNNOptions(name="gnn", ways=4, graph_features=16), (1, 28, 28))


def test_outputs_are_invariant_to_support_order(class_dataset):
    batch = EpisodeSampler(class_dataset, ways=4, shots=3, queries=2, seed=0).batch(0, 2)
    shuffled = shuffled_support(batch, seed=1)
    assert not torch.equal(shuffled.support_y, batch.support_y)
    for learner in learners():
        for mode in ("eval", "train"):  # train mode: batch-norm statistics over all items/pairs/nodes
            getattr(learner, mode)()
            with torch.no_grad():
                torch.testing.assert_close(learner.logits(shuffled), learner.logits(batch), rtol=1e-4, atol=1e-5)


def test_relation_classes_are_summed_support_maps_and_loss_is_mse_on_one_hot():
    support = torch.randn(2, 6, 3, 2, 2)
    labels = torch.tensor([[0, 1, 0, 2, 1, 2], [2, 2, 1, 0, 0, 1]])
    sums = class_sums(support, labels, 3)
    for t in range(2):
        for k in range(3):
            torch.testing.assert_close(sums[t, k], support[t][labels[t] == k].sum(0))
    learner = RelationNetwork(RelationOptions(name="relation"), (1, 28, 28))
    scores = torch.rand(2, 5, 3)
    query_y = torch.randint(0, 3, (2, 5))
    expected = ((scores - F.one_hot(query_y, 3).float()) ** 2).mean()
    torch.testing.assert_close(learner.loss(scores, query_y), expected)


def test_gnn_adjacency_is_a_row_softmax_without_self_edges():
    torch.manual_seed(0)
    adjacency = LearnedAdjacency(7, 8).eval()(torch.randn(3, 5, 7))
    torch.testing.assert_close(adjacency.sum(-1), torch.ones(3, 5))
    assert torch.all(adjacency.diagonal(dim1=1, dim2=2) == 0) and torch.all(adjacency >= 0)


def test_gnn_query_node_carries_a_uniform_label_and_fewer_ways_are_padded(class_dataset):
    torch.manual_seed(0)
    learner = GraphNetwork(GNNOptions(name="gnn", ways=5, graph_features=16), (1, 28, 28)).eval()
    graphs = []
    learner.gnn.register_forward_pre_hook(lambda module, inputs: graphs.append(inputs[0]))
    batch = EpisodeSampler(class_dataset, ways=3, shots=1, queries=2, seed=0).batch(0, 1)
    logits = learner.predict(batch)
    assert logits.shape == (1, 6, 3)
    nodes = graphs[0]  # [Q, S + 1, D + 5]
    assert nodes.shape[:2] == (6, 4)
    torch.testing.assert_close(nodes[:, -1, -5:], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0, 0]).expand(6, -1))
    torch.testing.assert_close(nodes[:, :3, -5:], F.one_hot(batch.support_y[0], 5).float().expand(6, -1, -1))


def test_gnn_training_builds_one_graph_per_task_from_one_of_its_own_queries(class_dataset):
    """train_graphs_per_task=1 (the paper's episodes): T graphs, each holding one query of its own task,
    and the loss is the cross-entropy of those graphs' logits against those queries' labels."""
    torch.manual_seed(0)
    learner = GraphNetwork(GNNOptions(name="gnn", ways=4, graph_features=16, train_graphs_per_task=1), (1, 28, 28))
    learner.eval()  # running batch-norm statistics: an image's embedding does not depend on the batch
    graphs, outputs = [], []

    def record(module, inputs, output) -> None:
        graphs.append(inputs[0])
        outputs.append(output)

    learner.gnn.register_forward_hook(record)
    batch = EpisodeSampler(class_dataset, ways=4, shots=1, queries=3, seed=0).batch(0, 2)
    metrics = learner.meta_step(batch)
    nodes, logits = graphs[0], outputs[0]
    assert nodes.shape[:2] == (2, 5) and logits.shape == (2, 4)
    with torch.no_grad():
        embedding_size = learner.backbone(batch.query_x[0]).shape[-1]
        labels = []
        for t in range(2):
            query_embeddings = learner.backbone(batch.query_x[t])  # [Q, D]
            distances = (query_embeddings - nodes[t, -1, :embedding_size]).abs().amax(-1)
            assert int((distances < 1e-5).sum()) == 1, distances
            labels.append(batch.query_y[t, int(distances.argmin())])
    torch.testing.assert_close(metrics["loss"].detach(), F.cross_entropy(logits.detach(), torch.stack(labels)))
