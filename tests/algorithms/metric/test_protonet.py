"""ProtoNet logits against hand-computed distances; one backbone pass; training signal."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from metalab.algorithms.metric.protonet import ProtoNet, ProtoNetOptions
from metalab.data.episodes import EpisodeSampler


def make_learner(**options) -> ProtoNet:
    torch.manual_seed(0)
    return ProtoNet(ProtoNetOptions(name="protonet", **options), (1, 28, 28))


def test_logits_are_negative_squared_distances_to_class_means(class_dataset):
    learner = make_learner().eval()
    batch = EpisodeSampler(class_dataset, ways=3, shots=2, queries=2, seed=0).batch(0, 2)
    logits = learner.predict(batch)
    assert logits.shape == (2, 6, 3)
    with torch.no_grad():
        for t in range(2):
            support = learner.backbone(batch.support_x[t])
            query = learner.backbone(batch.query_x[t])
            for q in range(6):
                for k in range(3):
                    prototype = support[batch.support_y[t] == k].mean(0)
                    expected = -sum((float(query[q, d]) - float(prototype[d])) ** 2 for d in range(query.shape[1]))
                    assert abs(float(logits[t, q, k]) - expected) <= 1e-4 * max(1.0, abs(expected))


def test_cosine_logits():
    learner = make_learner(distance="cosine", cosine_scale=5.0).eval()
    support_x, query_x = torch.rand(4, 1, 28, 28), torch.rand(3, 1, 28, 28)
    support_y = torch.tensor([0, 1, 0, 1])
    logits = learner.adapt(support_x, support_y)(query_x)
    with torch.no_grad():
        s, q = learner.backbone(support_x), learner.backbone(query_x)
        protos = torch.stack([s[support_y == k].mean(0) for k in range(2)])
        expected = 5.0 * F.cosine_similarity(q.unsqueeze(1), protos.unsqueeze(0), dim=-1)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_adapt_matches_batched_predict(class_dataset):
    learner = make_learner().eval()
    batch = EpisodeSampler(class_dataset, ways=4, shots=3, queries=2, seed=5).batch(0, 3)
    batched = learner.predict(batch)
    for t in range(3):
        single = learner.adapt(batch.support_x[t], batch.support_y[t])(batch.query_x[t])
        torch.testing.assert_close(single, batched[t], rtol=1e-4, atol=1e-4)


def test_all_images_of_a_batch_go_through_the_backbone_once(class_dataset):
    learner = make_learner()
    calls = []
    learner.backbone.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    batch = EpisodeSampler(class_dataset, ways=5, shots=1, queries=3, seed=0).batch(0, 4)
    learner.meta_step(batch)
    assert calls == [4 * (5 + 15)]


def test_meta_step_leaves_gradients_and_training_reduces_loss(class_dataset):
    learner = make_learner()
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    sampler = EpisodeSampler(class_dataset, ways=5, shots=1, queries=3, seed=0)
    losses = []
    for step in range(30):
        optimizer.zero_grad()
        metrics = learner.meta_step(sampler.batch(step * 2, 2))
        assert all(p.grad is not None for p in learner.parameters())
        optimizer.step()
        losses.append(float(metrics["loss"]))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
