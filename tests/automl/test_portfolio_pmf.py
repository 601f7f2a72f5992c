"""Portfolio-then-PMF: the first proposals are the greedy portfolio's (a hand-made matrix with a
known portfolio), then PMF finds the best configuration of a new task drawn from the same low-rank
model within a few evaluations (synthetic, known answer)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metalab.automl.metadataset import MetaDataset
from metalab.automl.pmf import PMFOptimiser
from metalab.automl.portfolio_pmf import portfolio_pmf_optimiser
from metalab.automl.space import design
from test_defaults import hand_meta


def proposals(optimiser: PMFOptimiser, target: np.ndarray, count: int) -> list[int]:
    """The first ``count`` configurations ``optimiser`` proposes on a task whose scores are ``target``."""
    proposed = []
    for _ in range(count):
        index = optimiser.propose()
        proposed.append(index)
        optimiser.observe(index, float(target[index]))
    return proposed


def test_first_proposals_are_the_portfolio_then_no_repeats():
    meta = hand_meta()  # its greedy portfolio is [4, 0, 2] (worked out in test_defaults)
    proposed = proposals(portfolio_pmf_optimiser(meta, start=3, rank=1), np.linspace(0.1, 0.9, 10), 10)
    assert proposed[:3] == [4, 0, 2]
    assert sorted(proposed) == list(range(10))


def test_start_zero_is_plain_pmf():
    meta = hand_meta()
    plain = PMFOptimiser(meta.scores, rank=1)
    assert portfolio_pmf_optimiser(meta, start=0, rank=1).propose() == plain.propose()
    with pytest.raises(ValueError, match="start"):
        portfolio_pmf_optimiser(meta, start=-1)


def low_rank_meta(tasks: int, seed: int = 0) -> tuple[MetaDataset, np.ndarray]:
    """Scores ``0.7 + 0.05 * (column offset + U V^T)`` of rank 2 over the design's configurations;
    the last 5 rows are returned apart as new tasks."""
    configurations = design(per_learner=4)
    rng = np.random.default_rng(seed)
    m = len(configurations)
    scores = 0.7 + 0.05 * (rng.normal(size=m)[None, :] + rng.normal(size=(tasks + 5, 2)) @ rng.normal(size=(2, m)))
    known = scores[:tasks]
    names = [f"t{i}" for i in range(tasks)]
    features = pd.DataFrame({"f": np.arange(tasks, dtype=float)}, index=names)
    return MetaDataset(names, configurations, known, np.zeros_like(known), features), scores[tasks:]


def test_finds_the_best_configuration_of_a_new_low_rank_task_within_8_evaluations():
    meta, new_tasks = low_rank_meta(40)
    for row in new_tasks:
        optimiser = portfolio_pmf_optimiser(meta, start=3, rank=2, l2=0.01)
        seen = []
        for _ in range(8):
            index = optimiser.propose()
            seen.append(index)
            optimiser.observe(index, float(row[index]))
        # with 3 unknowns (bias + rank 2) the posterior pins the row down after a few evaluations
        assert int(np.argmax(row)) in seen, (seen, int(np.argmax(row)))
