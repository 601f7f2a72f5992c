"""The sinusoid-or-line and ambiguous regression families (PLATIPUS, section 6): seeded tasks, both kinds of
truth, and support points that the task's sinusoid and line both explain."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metalab.data.ambiguous import LINE, SINUSOID, AmbiguousSinusoidLine, SinusoidOrLine, sinusoid
from metalab.data.regression import regression_family, regression_source
from metalab.data.sources import REGRESSION_FAMILIES


@pytest.mark.parametrize("name", ["sinusoid-line", "ambiguous"])
def test_tasks_are_a_function_of_seed_split_and_index(name):
    assert name in REGRESSION_FAMILIES
    first = regression_source(name, "train", shots=5, queries=7, seed=3).batch(0, 4)
    again = regression_source(name, "train", shots=5, queries=7, seed=3).batch(0, 4)
    other_seed = regression_source(name, "train", shots=5, queries=7, seed=4).batch(0, 4)
    other_split = regression_source(name, "test", shots=5, queries=7, seed=3).batch(0, 4)
    assert first.support_x.shape == (4, 5, 1) and first.query_y.shape == (4, 7, 1)
    assert torch.equal(first.support_x, again.support_x) and torch.equal(first.query_y, again.query_y)
    assert not torch.equal(first.support_x, other_seed.support_x)
    assert not torch.equal(first.support_x, other_split.support_x)


def test_ambiguous_support_points_fit_both_the_sinusoid_and_the_line():
    family = regression_family("ambiguous")
    assert isinstance(family, AmbiguousSinusoidLine)
    tasks = regression_source("ambiguous", "test", shots=5, queries=20, seed=0)
    truths = set()
    for index in range(30):
        task, function = tasks.task(index), tasks.function(index)
        x, y = task.support_x.double().numpy()[:, 0], task.support_y.double().numpy()[:, 0]
        line = function["slope"] * x + function["intercept"]
        assert np.abs(sinusoid(function, x) - line).max() <= family.tolerance + 1e-6  # both explain the support set
        assert np.allclose(y, family.evaluate(function, x), atol=1e-5)  # the values are the truth's
        xq, yq = task.query_x.double().numpy()[:, 0], task.query_y.double().numpy()[:, 0]
        assert np.allclose(yq, family.evaluate(function, xq), atol=1e-5)
        assert len(np.unique(x)) == 5 and (family.x_range[0] <= xq).all() and (xq <= family.x_range[1]).all()
        truths.add(function["truth"])
    assert truths == {SINUSOID, LINE}
    # away from the agreement set the two explanations differ: the queries tell them apart
    far = [tasks.function(i) for i in range(30)]
    grid = np.linspace(-5, 5, 101)
    assert all(np.abs(sinusoid(f, grid) - (f["slope"] * grid + f["intercept"])).max() > 0.95 for f in far)


def test_sinusoid_or_line_draws_each_kind_with_its_ranges():
    family = SinusoidOrLine()
    rng = np.random.default_rng(0)
    functions = [family.sample_function(rng) for _ in range(400)]
    lines = sum(f["truth"] == LINE for f in functions)
    assert 150 < lines < 250  # 1/2 of 400: 200 +- 5 standard deviations (10)
    assert all(0.1 <= f["amplitude"] <= 5 and -3 <= f["slope"] <= 3 and -3 <= f["intercept"] <= 3 for f in functions)
    x = np.linspace(-5, 5, 11)
    line = {"truth": LINE, "slope": 2.0, "intercept": -1.0, "amplitude": 1.0, "phase": 0.0}
    assert np.allclose(family.evaluate(line, x), 2 * x - 1)
    assert np.allclose(family.evaluate({**line, "truth": SINUSOID}, x), np.sin(x))


def test_noise_is_added_to_the_truth():
    noisy = SinusoidOrLine(noise=0.3)
    x, y = noisy.sample(np.random.default_rng(1), 2000)
    function = noisy.sample_function(np.random.default_rng(1))
    residual = y[:, 0] - noisy.evaluate(function, x[:, 0])
    assert abs(residual.std() - 0.3) < 0.03 and abs(residual.mean()) < 0.03
