"""Set-encoder learners (hypernetwork, CNP classifier): invariant to the order of the support set."""
from __future__ import annotations

import torch

from metalab.algorithms.model.cnp_classifier import CNPClassifier, CNPClassifierOptions
from metalab.algorithms.model.hypernet import HeadGenerator, HyperNet, HyperNetOptions

SHAPE = (1, 12, 12)


def set_learners():
    torch.manual_seed(0)
    return [
        HyperNet(HyperNetOptions(name="hypernet", encoder="pixels", set_size=16), SHAPE),
        CNPClassifier(CNPClassifierOptions(name="cnp-classifier", encoder="pixels", representation_size=16,
                                           decoder_size=16), SHAPE),
    ]


def test_outputs_are_invariant_to_support_order_and_equivariant_to_labels():
    generator = torch.Generator().manual_seed(1)
    support_x = torch.rand(2, 8, *SHAPE, generator=generator)
    support_y = torch.tensor([0, 0, 0, 1, 2, 2, 3, 1]).expand(2, -1)  # unequal shots per class
    query_x = torch.rand(2, 5, *SHAPE, generator=generator)
    order = torch.randperm(8, generator=generator)
    relabel = torch.tensor([2, 0, 3, 1])  # class k gets label relabel[k]
    for learner in set_learners():
        learner.eval()
        with torch.no_grad():
            logits = learner.logits(support_x, support_y, query_x, 4)
            shuffled = learner.logits(support_x[:, order], support_y[:, order], query_x, 4)
            renamed = learner.logits(support_x, relabel[support_y], query_x, 4)
        torch.testing.assert_close(shuffled, logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(renamed[..., relabel], logits, rtol=1e-5, atol=1e-5)


def test_hypernetwork_generates_one_weight_vector_and_bias_per_class():
    generator = HeadGenerator(features=6, set_size=8)
    weights, bias = generator(torch.randn(3, 5, 6), torch.tensor([0, 1, 2, 1, 0]).expand(3, -1), ways=3)
    assert weights.shape == (3, 3, 6) and bias.shape == (3, 3)


def test_hypernetwork_logits_are_the_generated_linear_head():
    learner = set_learners()[0].eval()
    support_x, query_x = torch.rand(1, 4, *SHAPE), torch.rand(1, 3, *SHAPE)
    support_y = torch.tensor([[0, 1, 0, 1]])
    with torch.no_grad():
        weights, bias = learner.generator(support_x.flatten(2), support_y, 2)
        expected = learner.log_scale.exp() * query_x.flatten(2) @ weights.transpose(1, 2) + bias.unsqueeze(1)
        torch.testing.assert_close(learner.logits(support_x, support_y, query_x, 2), expected)
