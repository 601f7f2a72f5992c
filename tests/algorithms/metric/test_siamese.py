"""Siamese network: balanced pairs from the training tasks only; most-similar-support classification."""
from __future__ import annotations

import torch

from metalab.algorithms.metric.components.pairs import random_affine, sample_pairs
from metalab.algorithms.metric.siamese import SiameseNetwork, SiameseOptions
from metalab.data.episodes import EpisodeSampler


def test_pairs_are_balanced_and_correctly_labelled():
    labels = torch.tensor([[0, 0, 1, 1, 2, 2, 0, 1, 2], [2, 1, 0, 0, 1, 2, 2, 1, 0]])
    first, second, same = sample_pairs(labels, 400, torch.Generator().manual_seed(0))
    assert first.shape == second.shape == same.shape == (2, 400)
    assert int(same.sum()) == 400 and torch.all(same[:, :200]) and not torch.any(same[:, 200:])
    assert torch.all(first != second)
    first_label, second_label = labels.gather(1, first), labels.gather(1, second)
    assert torch.equal(first_label == second_label, same)
    # every item of a task is used as an anchor (uniformly), not only a few
    assert all(len(set(first[t].tolist())) == 9 for t in range(2))


def test_pairs_need_two_items_of_a_class_and_two_classes():
    for labels, count in ((torch.tensor([[0, 1, 2]]), 4), (torch.tensor([[0, 0, 0]]), 4),
                          (torch.tensor([[0, 0, 1]]), 3)):
        try:
            sample_pairs(labels, count)
        except ValueError as error:
            assert "pairs" in str(error) or "ways" in str(error)
        else:
            raise AssertionError(f"no error for labels {labels.tolist()} and {count} pairs")


def test_training_pairs_come_from_the_training_batch_only(class_dataset):
    """Only the training batch's images (training classes) reach the twin network, embedded once."""
    torch.manual_seed(0)
    train_classes = class_dataset.subset(list(range(8)))
    learner = SiameseNetwork(SiameseOptions(name="siamese", pairs_per_task=32), (1, 28, 28))
    seen = []
    learner.backbone.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    batch = EpisodeSampler(train_classes, ways=4, shots=2, queries=2, seed=0).batch(0, 2)
    metrics = learner.meta_step(batch)
    assert len(seen) == 1
    expected = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
    assert torch.equal(seen[0], expected)
    assert set(batch.classes.flatten().tolist()) <= set(range(8))
    assert {"loss", "accuracy", "pair_accuracy"} <= set(metrics)
    assert all(p.grad is not None for p in learner.parameters())


def test_query_takes_the_class_of_its_most_similar_support_item():
    torch.manual_seed(0)
    learner = SiameseNetwork(SiameseOptions(name="siamese"), (1, 28, 28)).eval()
    support, query = torch.randn(1, 6, 64), torch.randn(1, 4, 64)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]])
    logits = learner.head(support, labels, query, 3)
    with torch.no_grad():
        weights, bias = learner.distance.weight[0], learner.distance.bias[0]
        for q in range(4):
            scores = [float((weights * (query[0, q] - support[0, s]).abs()).sum() + bias) for s in range(6)]
            for k in range(3):
                assert abs(float(logits[0, q, k]) - max(scores[2 * k], scores[2 * k + 1])) < 1e-5


def test_affine_distortions_keep_shape_and_identity_at_zero_probability():
    images = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(random_affine(images, probability=0.0), images, atol=1e-5, rtol=0)
    moved = random_affine(images, torch.Generator().manual_seed(0), probability=1.0)
    assert moved.shape == images.shape and not torch.allclose(moved, images)
