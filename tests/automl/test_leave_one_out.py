"""Leave-one-dataset-out: the held-out task's results never reach a meta-model (checked by giving
every method a meta-dataset whose held-out row is poisoned: nothing a method does may change)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metalab.automl.leave_one_out import METHODS, TabularObjective, evaluate_task, regret_curve, run_method, summarise
from metalab.automl.metadataset import MetaDataset


def poisoned(meta: MetaDataset, task: str) -> MetaDataset:
    scores = meta.scores.copy()
    scores[meta.index(task)] = np.random.default_rng(0).random(scores.shape[1])  # other results for the held-out task
    return MetaDataset(meta.tasks, meta.configurations, scores, meta.fit_seconds, meta.metafeatures)


def test_held_out_results_do_not_change_any_method(small_meta):
    task = small_meta.tasks[3]
    other = poisoned(small_meta, task)
    true_scores = small_meta.scores[small_meta.index(task)]
    assert task not in small_meta.without(task).tasks
    for method in (*METHODS, "gp-design"):
        sequences = []
        for meta in (small_meta, other):
            objective = TabularObjective(true_scores)  # the black box is the real task in both runs
            run_method(method, meta.without(task), meta.metafeatures.loc[task], objective, budget=4)
            sequences.append(objective.queries)
        assert sequences[0] == sequences[1], method
        assert len(sequences[0]) == 4, method


def test_regret_curve_by_hand():
    scores = np.array([0.5, 0.9, 0.7, 1.0, 0.1])
    # best 1.0, worst 0.1: found 0.7, 0.7, 0.9, 1.0 -> regret 0.3/0.9, 0.3/0.9, 0.1/0.9, 0, 0 (kept)
    np.testing.assert_allclose(regret_curve(scores, [2, 0, 1, 3], 5), [1 / 3, 1 / 3, 1 / 9, 0, 0])


def test_summary_has_a_confidence_interval_over_tasks(small_meta):
    rows = []
    for task in small_meta.tasks[:3]:
        rows += evaluate_task(small_meta, task, ["portfolio", "random"], budget=5)
    summary = summarise(pd.DataFrame(rows), at=(1, 5)).set_index("method")
    assert summary.loc["portfolio", "tasks"] == 3
    curves = np.stack([r["curve"] for r in rows if r["method"] == "portfolio"])
    assert np.isclose(summary.loc["portfolio", "regret@5"], curves[:, 4].mean())
    assert summary.loc["portfolio", "regret@1"] >= summary.loc["portfolio", "regret@5"]
