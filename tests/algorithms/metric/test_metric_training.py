"""Every metric learner: one backbone pass per meta-batch, gradients everywhere, and it learns."""
from __future__ import annotations

import pytest
import torch

from metalab.algorithms.registry import learner_class
from metalab.data.episodes import EpisodeSampler

OPTIONS = {
    "matching": {"fce": True, "fce_steps": 2, "cosine_scale": 5.0},
    "relation": {"hidden": 16},
    "siamese": {"pairs_per_task": 32},
    "gnn": {"ways": 4, "graph_features": 16},
    "metaoptnet": {"svm_c": 1.0},
    "r2d2": {},
    "baseline": {"num_classes": 12},
    "baselinepp": {"num_classes": 12},
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_learner_embeds_once_and_training_reduces_loss(name, class_dataset):
    torch.manual_seed(0)
    cls = learner_class(name)
    learner = cls(cls.Options(name=name, **OPTIONS[name]), (1, 28, 28))
    calls = []
    learner.backbone.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    sampler = EpisodeSampler(class_dataset, ways=4, shots=2, queries=2, seed=0)
    optimizer = torch.optim.Adam(learner.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        optimizer.zero_grad()
        metrics = learner.meta_step(sampler.batch(2 * step, 2))
        if step == 0:
            assert calls == [2 * (8 + 8)], "all images of the meta-batch go through the backbone in one pass"
            assert all(p.grad is not None for p in learner.parameters())
        optimizer.step()
        losses.append(float(metrics["loss"]))
        assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    learner.eval()
    batch = sampler.batch(1000, 3)
    logits = learner.predict(batch)
    assert logits.shape == (3, 8, 4) and torch.isfinite(logits).all()
