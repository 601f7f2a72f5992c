"""Every model-based classifier meta-trains on small synthetic data with a falling loss.

Sequence models (LSTM, MANN) take longer to discover that the support labels matter, hence their
larger step counts on 2-way tasks; the 6x6 images keep each run at a few CPU seconds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metalab.algorithms.registry import learner_class
from metalab.data.classes import ClassDataset
from metalab.data.episodes import EpisodeSampler
from testdata import make_class_dataset

#: learner -> (small options, ways, steps)
SETTINGS = {
    "hypernet": (dict(encoder="pixels", set_size=32), 3, 60),
    "cnp-classifier": (dict(encoder="pixels", representation_size=32, decoder_size=32), 3, 60),
    "metanet": (dict(encoder="pixels", base_hidden=16, key_size=16, generator_hidden=8, max_ways=3), 3, 60),
    "snail": (dict(encoder="pixels", max_ways=2, sequence_length=3, filters=16), 2, 300),
    "mann": (dict(encoder="pixels", controller_size=32, memory_slots=16, memory_size=8, read_heads=1, max_ways=2),
             2, 300),
    "blackbox": (dict(encoder="pixels", lstm_size=32, max_ways=2), 2, 1000),
}


def tiny_class_dataset(classes: int = 12, items: int = 8, size: int = 6) -> ClassDataset:
    """Classes of noisy copies of one random template each, at a tiny image size."""
    return make_class_dataset(classes=classes, items=items, size=size)



@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_meta_training_lowers_the_query_loss(name):
    options, ways, steps = SETTINGS[name]
    dataset = tiny_class_dataset()
    sampler = EpisodeSampler(dataset, ways=ways, shots=1, queries=3, seed=0)
    torch.manual_seed(0)
    cls = learner_class(name)
    learner = cls(cls.Options(name=name, **options), dataset.image_shape)
    optimizer = torch.optim.Adam(learner.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        metrics = learner.meta_step(sampler.batch(step * 4, 4))
        if step == 0:
            assert all(p.grad is not None for p in learner.parameters()), "every parameter gets a meta-gradient"
            assert 0.0 <= float(metrics["accuracy"]) <= 1.0
        optimizer.step()
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-30:]) < 0.9 * np.mean(losses[:30])
