"""Meta Networks: gradient preprocessing, per-example meta information, fast weights in the base learner."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from metalab.algorithms.model.metanet import (
    AugmentedLinear,
    MetaNet,
    MetaNetOptions,
    per_example_gradients,
    preprocess_gradient,
)

SHAPE = (1, 12, 12)


def make_metanet(trained_generators: bool = True, **options) -> MetaNet:
    """A small MetaNet; the generators' zero-initialised output layers are randomised (as after some
    meta-training) unless ``trained_generators`` is False."""
    torch.manual_seed(0)
    learner = MetaNet(MetaNetOptions(name="metanet", encoder="pixels", base_hidden=8, key_size=8, generator_hidden=6,
                                     max_ways=4, **options), SHAPE)
    if trained_generators:
        for generator in (learner.m, learner.d):
            torch.nn.init.normal_(generator.net.net[-1].weight, std=0.5)
    return learner


def test_fast_weights_start_at_zero_so_the_untrained_base_learner_runs_on_slow_weights():
    learner = make_metanet(trained_generators=False)
    memory = learner.example_fast_weights(torch.randn(1, 3, 144), torch.tensor([[0, 1, 2]]), 3)
    assert all(bool((value == 0).all()) for value in memory.values())


def test_gradient_preprocessing_of_andrychowicz_et_al():
    p = 10.0
    out = preprocess_gradient(torch.tensor([0.5, -2.0, 1e-6]), p)
    torch.testing.assert_close(out[0], torch.tensor([math.log(0.5) / p, 1.0]))
    torch.testing.assert_close(out[1], torch.tensor([math.log(2.0) / p, -1.0]))
    torch.testing.assert_close(out[2], torch.tensor([-1.0, math.exp(p) * 1e-6]))  # below e^-p: (-1, e^p g)


def test_layer_augmentation_sums_relu_of_slow_and_fast_outputs():
    layer = AugmentedLinear(3, 2)
    x, fast = torch.randn(5, 3), torch.randn(5, 2, 3)
    expected = F.relu(layer.slow(x)) + F.relu(torch.einsum("noi,ni->no", fast, x))
    torch.testing.assert_close(layer(x, fast), expected)
    torch.testing.assert_close(layer(x, None), F.relu(layer.slow(x)))


def test_per_example_gradients_match_one_backward_per_example():
    learner = make_metanet()
    inputs, labels = torch.randn(3, 144), torch.tensor([0, 2, 1])
    loss_of = lambda logits, y: F.cross_entropy(logits[..., :3], y)  # noqa: E731
    names = ["hidden.slow.weight", "output.slow.weight"]
    gradients = per_example_gradients(learner.base, names, loss_of, inputs, labels, first_order=True)
    for i in range(3):
        learner.zero_grad()
        loss_of(learner.base(inputs[i : i + 1]), labels[i : i + 1]).backward()
        for name, parameter in learner.base.named_parameters():
            if name in names:
                torch.testing.assert_close(gradients[name][i], parameter.grad, rtol=1e-5, atol=1e-6)


def test_fast_weights_change_the_base_learners_output_and_receive_gradients():
    learner = make_metanet()
    support_x, query_x = torch.rand(2, 4, *SHAPE), torch.rand(2, 3, *SHAPE)
    support_y = torch.tensor([0, 1, 2, 3]).expand(2, -1)
    support_b = learner.base_encoder(support_x.flatten(0, 1)).view(2, 4, -1)
    query_b = learner.base_encoder(query_x.flatten(0, 1)).view(2, 3, -1)
    memory = learner.example_fast_weights(support_b, support_y, 4)
    assert memory["hidden.slow.weight"].shape == (2, 4, 8, 144) and memory["output.slow.weight"].shape == (2, 4, 4, 8)
    fast = {name: value.mean(1, keepdim=True).expand(-1, 3, *value.shape[2:]) for name, value in memory.items()}
    with_fast, slow_only = learner.base(query_b, fast), learner.base(query_b)
    assert not torch.allclose(with_fast, slow_only)
    with_fast.sum().backward()
    # the fast-weight generator m is trained through the fast weights it produced
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.m.parameters())


def test_every_slow_weight_gets_a_meta_gradient_and_queries_read_the_memory():
    learner = make_metanet()
    support_x, query_x = torch.rand(2, 4, *SHAPE), torch.rand(2, 6, *SHAPE)
    support_y = torch.tensor([0, 1, 2, 3]).expand(2, -1)
    logits = learner.logits(support_x, support_y, query_x, 4)
    F.cross_entropy(logits.flatten(0, 1), torch.tensor([0, 1, 2, 3, 0, 1]).repeat(2)).backward()
    without_gradient = [n for n, p in learner.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert without_gradient == []
    with torch.no_grad():  # the support labels reach the prediction only through the meta information
        relabelled = learner.logits(support_x, (support_y + 1) % 4, query_x, 4)
    assert not torch.allclose(relabelled, logits.detach())
