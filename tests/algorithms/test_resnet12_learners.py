"""Every metric learner with a ``backbone`` option and every model-based learner with an ``encoder``
option runs on ResNet-12 by name: a meta-training step reaches every parameter, and ``predict`` on a
batch of tasks equals ``adapt`` task by task."""
from __future__ import annotations

from dataclasses import fields

import pytest
import torch

import metalab.nn.backbones as backbones
from metalab.algorithms.registry import learner_class, learner_names
from metalab.data.episodes import EpisodeSampler
from metalab.nn.resnet12 import ResNet12
from testdata import make_class_dataset

#: the option that names the image network, per family (the gradient family builds its own network).
NAME_OPTION = {"metric": "backbone", "model": "encoder"}
#: options a learner needs for 3-way tasks over 12 classes, and small sizes for the learners' own layers.
OPTIONS = {
    "gnn": dict(ways=3),
    "baseline": dict(num_classes=12),
    "baselinepp": dict(num_classes=12),
    "hypernet": dict(set_size=8),
    "cnp-classifier": dict(representation_size=8, decoder_size=8),
    "metanet": dict(base_hidden=8, key_size=8, generator_hidden=4, max_ways=3),
    "snail": dict(max_ways=3, sequence_length=3, filters=8),
    "mann": dict(controller_size=8, memory_slots=8, memory_size=4, read_heads=1, max_ways=3),
    "blackbox": dict(lstm_size=8, max_ways=3),
}
WIDTHS = (4, 4, 6, 8)


def learners_naming_a_backbone() -> list[tuple[str, str]]:
    """(learner, option) for every registered metric or model learner with a backbone/encoder option."""
    found = []
    for name in learner_names():
        cls = learner_class(name)
        if not cls.__module__.startswith("metalab.algorithms."):
            continue  # a learner a test registered
        family = cls.__module__.split(".")[2]
        option = NAME_OPTION.get(family)
        if option in {f.name for f in fields(cls.Options)}:
            found.append((name, option))
    return found


def test_the_learners_naming_a_backbone_are_found():
    names = {name for name, _ in learners_naming_a_backbone()}
    assert {"protonet", "matching", "metaoptnet", "r2d2", "baseline", "cnp-classifier", "snail"} <= names
    assert {"relation", "maml"}.isdisjoint(names)


@pytest.mark.parametrize("name,option", learners_naming_a_backbone())
def test_learner_meta_trains_predicts_and_adapts_with_resnet12(name, option, monkeypatch):
    monkeypatch.setattr(backbones, "RESNET12_CHANNELS", WIDTHS)  # a narrow ResNet-12 keeps this fast
    dataset = make_class_dataset(classes=12, items=6, size=20, channels=3)
    torch.manual_seed(0)
    cls = learner_class(name)
    learner = cls(cls.Options(name=name, **{option: "resnet12"}, **OPTIONS.get(name, {})), dataset.image_shape)
    networks = [m for m in learner.modules() if isinstance(m, ResNet12)]
    assert networks and all(n.blocks[-1].body[0].out_channels == WIDTHS[-1] for n in networks)
    sampler = EpisodeSampler(dataset, ways=3, shots=2, queries=2, seed=0)
    metrics = learner.meta_step(sampler.batch(0, 2))
    assert torch.isfinite(metrics["loss"])
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learner.parameters())
    learner.eval()
    batch = sampler.batch(1, 2)
    logits = learner.predict(batch)
    assert logits.shape == (2, 6, 3) and torch.isfinite(logits).all()
    for t in range(2):
        single = learner.adapt(batch.support_x[t], batch.support_y[t])(batch.query_x[t])
        torch.testing.assert_close(single, logits[t], rtol=1e-3, atol=1e-3)  # Baseline fits its classifier iteratively
