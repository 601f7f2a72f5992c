"""Scores split by a heterogeneous task set's groups: each family's mean and 95% CI from its own episodes."""
from __future__ import annotations

import math

import pytest

from metalab.train.evaluate import EvalResult, by_group


def test_each_group_is_summarised_from_its_own_episodes():
    result = EvalResult("mse", 0.0, 0.0, 5, None, 5, 10, 0, 1.0, scores=[1.0, 3.0, 10.0, 2.0, 20.0])
    summary = by_group(result, [0, 0, 1, 0, 1], ["line", "cubic", "sinusoid"])
    assert set(summary) == {"line", "cubic"}  # a family without episodes is left out
    assert summary["line"]["mse"] == pytest.approx(2.0) and summary["line"]["episodes"] == 3
    assert summary["line"]["ci95"] == pytest.approx(1.96 * 1.0 / math.sqrt(3))  # sample sd of 1, 3, 2 is 1
    assert summary["cubic"]["mse"] == pytest.approx(15.0)
    with pytest.raises(ValueError, match="4 groups for 5"):
        by_group(result, [0, 0, 1, 0], ["line", "cubic"])
