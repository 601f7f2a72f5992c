"""The mixed operation: with a one-hot alpha it is exactly the chosen operation; shapes of every candidate."""
from __future__ import annotations

import pytest
import torch

from metalab.nas.operations import DARTS_OPERATIONS, FEW_SHOT_OPERATIONS, MixedOperation, check_operations

ALL = list(dict.fromkeys([*DARTS_OPERATIONS, *FEW_SHOT_OPERATIONS]))


@pytest.mark.parametrize("stride", [1, 2])
def test_a_one_hot_mixture_is_exactly_its_operation(stride):
    torch.manual_seed(0)
    mixed = MixedOperation(ALL, channels=4, stride=stride).double()
    x = torch.randn(3, 4, 7, 7, dtype=torch.float64)
    for index, name in enumerate(ALL):
        one_hot = torch.nn.functional.one_hot(torch.tensor(index), len(ALL)).double()
        alone = mixed.ops[index](x)
        assert torch.equal(mixed(x, one_hot), alone), name  # bit for bit: the others are weighted by exactly 0
        assert alone.shape == (3, 4, 4 if stride == 2 else 7, 4 if stride == 2 else 7), name


def test_a_mixture_is_the_weighted_sum_of_its_operations():
    torch.manual_seed(1)
    mixed = MixedOperation(DARTS_OPERATIONS, channels=2, stride=1).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    weights = torch.softmax(torch.randn(len(DARTS_OPERATIONS), dtype=torch.float64), 0)
    expected = sum(w * op(x) for w, op in zip(weights, mixed.ops))
    assert torch.allclose(mixed(x, weights), expected, atol=1e-14)


def test_search_batch_norm_has_no_affine_parameters():
    mixed = MixedOperation(DARTS_OPERATIONS, channels=2, stride=1)
    norms = [m for m in mixed.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.affine for m in norms)


@pytest.mark.parametrize("names", [[], ["none"], ["sep_conv_3x3", "sep_conv_3x3"], ["conv_9x9"]])
def test_bad_operator_lists_are_refused(names):
    with pytest.raises(ValueError, match="operations"):
        check_operations(names)
