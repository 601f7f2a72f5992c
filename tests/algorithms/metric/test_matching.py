"""Matching Networks: attention equals a hand-computed softmax of cosines; FCE is batched per task."""
from __future__ import annotations

import math

import torch

from metalab.algorithms.metric.matching import MatchingNetwork, MatchingOptions
from metalab.data.episodes import EpisodeSampler


def make_learner(**options) -> MatchingNetwork:
    torch.manual_seed(0)
    return MatchingNetwork(MatchingOptions(name="matching", **options), (1, 28, 28)).eval()


def test_log_probabilities_are_summed_softmax_of_cosines(class_dataset):
    learner = make_learner(cosine_scale=3.0)
    batch = EpisodeSampler(class_dataset, ways=3, shots=2, queries=2, seed=0).batch(0, 2)
    logits = learner.predict(batch)
    assert logits.shape == (2, 6, 3)
    with torch.no_grad():
        for t in range(2):
            support = learner.backbone(batch.support_x[t]).tolist()
            query = learner.backbone(batch.query_x[t]).tolist()
            for q in range(6):
                cosines = []
                for s in support:
                    dot = sum(a * b for a, b in zip(query[q], s))
                    norms = math.sqrt(sum(a * a for a in query[q])) * math.sqrt(sum(b * b for b in s))
                    cosines.append(3.0 * dot / norms)
                weights = [math.exp(c) for c in cosines]
                attention = [w / sum(weights) for w in weights]
                for k in range(3):
                    expected = sum(a for a, y in zip(attention, batch.support_y[t].tolist()) if y == k)
                    assert abs(math.exp(float(logits[t, q, k])) - expected) < 1e-5


def test_full_context_embeddings_batched_equals_task_by_task(class_dataset):
    learner = make_learner(fce=True, fce_steps=3)
    batch = EpisodeSampler(class_dataset, ways=4, shots=2, queries=3, seed=1).batch(0, 3)
    batched = learner.predict(batch)
    for t in range(3):
        single = learner.adapt(batch.support_x[t], batch.support_y[t])(batch.query_x[t])
        torch.testing.assert_close(single, batched[t], rtol=1e-4, atol=1e-5)
    # the query embedding f depends on the support set (context), unlike the plain embedding
    support, query = learner.backbone(batch.support_x[0]).unsqueeze(0), learner.backbone(batch.query_x[0]).unsqueeze(0)
    with torch.no_grad():
        g = learner.support_context(support)
        f1 = learner.query_context(query, g)
        f2 = learner.query_context(query, learner.support_context(support.flip(1)))
    assert not torch.allclose(f1, query) and not torch.allclose(f1, f2)
