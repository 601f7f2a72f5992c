"""Class sums and means of support features, against a hand example and a loop over classes."""
from __future__ import annotations

import torch

from metalab.nn.class_pooling import class_means, class_sums


def test_a_hand_example_with_an_empty_class():
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]]])  # [T=1, S=3, D=2]
    labels = torch.tensor([[0, 0, 2]])  # class 1 has no example
    torch.testing.assert_close(class_sums(features, labels, 3), torch.tensor([[[4.0, 6.0], [0.0, 0.0], [10.0, 0.0]]]))
    torch.testing.assert_close(class_means(features, labels, 3), torch.tensor([[[2.0, 3.0], [0.0, 0.0], [10.0, 0.0]]]))


def test_feature_maps_match_a_loop_over_classes_and_gradients_flow():
    features = torch.randn(2, 7, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 1, 0, 2, 1, 2, 2], [2, 2, 1, 0, 0, 1, 1]])
    means = class_means(features, labels, 3)
    assert means.shape == (2, 3, 3, 2, 2)
    for t in range(2):
        for k in range(3):
            torch.testing.assert_close(means[t, k], features[t][labels[t] == k].mean(0))
    assert torch.autograd.gradcheck(lambda x: class_means(x, labels, 3), (features,))
