"""kNN warm start: the truly nearest tasks on a hand-made meta-feature table; enqueued trials first."""
from __future__ import annotations

import numpy as np
import optuna
import pandas as pd

from metalab.automl.metadataset import MetaDataset
from metalab.automl.space import design, snap, suggest_configuration
from metalab.automl.warmstart import enqueue_configurations, nearest_tasks, warm_start_configurations

# f1 on a unit scale, f2 on a scale 1000x larger (standardisation must equalise them), f3 all
# missing (dropped), f4 constant (dropped).
KNOWN = pd.DataFrame(
    {"f1": [0.0, 1.0, 2.0, 3.0, 4.0], "f2": [0.0, 4000.0, 1000.0, 3000.0, 2500.0],
     "f3": [np.nan] * 5, "f4": [7.0] * 5},
    index=["A", "B", "C", "D", "E"],
)
QUERY = pd.Series({"f1": 0.5, "f2": 3900.0, "f3": 1.0, "f4": 7.0})


def test_nearest_tasks_by_standardised_l1_distance():
    # By hand: f1 has mean 2 and std sqrt(2); f2 mean 2100 and std 1428.286. The query's z-scores
    # are (-1.0607, 1.2603); the L1 distances of the tasks' z-scores to them:
    # A 3.084, B 0.424, C 3.091, D 2.398, E 3.455 (without standardisation f2 alone would decide).
    found = nearest_tasks(KNOWN, QUERY, k=5)
    assert [name for name, _ in found] == ["B", "D", "A", "C", "E"]
    np.testing.assert_allclose([d for _, d in found], [0.424, 2.398, 3.084, 3.091, 3.455], atol=1e-3)
    assert [name for name, _ in nearest_tasks(KNOWN, QUERY, k=2)] == ["B", "D"]


def test_warm_start_takes_the_best_configuration_of_each_nearest_task_without_repeats():
    configurations = design(per_learner=1)  # 10 configurations
    scores = np.full((5, 10), 0.5)
    best = {"A": 2, "B": 7, "C": 0, "D": 7, "E": 4}  # D's best equals B's: listed once
    for row, name in enumerate(KNOWN.index):
        scores[row, best[name]] = 0.9
    meta = MetaDataset(list(KNOWN.index), configurations, scores, np.zeros_like(scores), KNOWN)
    assert warm_start_configurations(meta, QUERY, k=3) == [7, 2]  # B, D (repeat), A


def test_enqueued_configurations_are_the_first_trials_evaluated():
    configurations = design(per_learner=2)
    chosen = [configurations[5], configurations[0], configurations[12]]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    enqueue_configurations(study, chosen)
    evaluated = []

    def objective(trial):
        learner, unit = suggest_configuration(trial)
        evaluated.append(snap(learner, unit, configurations).id)
        return float(unit.sum())

    study.optimize(objective, n_trials=6)
    assert evaluated[:3] == [c.id for c in chosen]
    assert len(evaluated) == 6
