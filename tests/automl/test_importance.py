"""fANOVA recovers the variance decomposition of synthetic functions whose decomposition is known."""
from __future__ import annotations

import numpy as np
import pytest

from metalab.automl.importance import fanova_importance, importance_table


def test_additive_function_with_known_weights():
    # f = 3 x1 + x2 (+ 0 x3) on the uniform cube: Var = (9 + 1) / 12, so the main effects explain
    # 0.9, 0.1 and 0 of the variance.
    x = np.random.default_rng(0).random((400, 3))
    importances = fanova_importance(x, 3 * x[:, 0] + x[:, 1], ["x1", "x2", "x3"])
    assert importances["x1"] == pytest.approx(0.9, abs=0.05)
    assert importances["x2"] == pytest.approx(0.1, abs=0.05)
    assert importances["x3"] == pytest.approx(0.0, abs=0.02)


def test_step_function_and_linear_terms():
    # f = 3 x1 + x2 + 2 [x3 > 1/2]: variances 9/12, 1/12 and 1 -> fractions 0.409, 0.045, 0.545
    x = np.random.default_rng(1).random((400, 3))
    importances = fanova_importance(x, 3 * x[:, 0] + x[:, 1] + 2 * (x[:, 2] > 0.5), ["x1", "x2", "x3"])
    expected = np.array([9 / 12, 1 / 12, 1.0]) / (10 / 12 + 1)
    assert np.allclose([importances[n] for n in ("x1", "x2", "x3")], expected, atol=0.05)


def test_table_has_every_hyperparameter_of_every_learner(small_meta):
    table = importance_table(small_meta)
    assert set(table.learner) == {"logreg", "svm", "knn", "rf", "hgb"}
    assert len(table) == 2 + 2 + 3 + 3 + 4
    sums = table.groupby("learner").importance_mean.sum()
    assert ((sums > 0.5) & (sums < 1.0 + 1e-9)).all()
