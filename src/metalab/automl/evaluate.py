"""Scoring one configuration on one task: balanced accuracy over a fixed stratified k-fold split.

The split is fixed by the task's name and the build's seed (so every configuration of a task sees
the same folds, on every machine), and each fold's score and training time are kept.
"""
from __future__ import annotations

import time
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metalab.automl.space import Configuration, build_estimator

FOLDS = 3


@dataclass(frozen=True)
class FoldResult:
    """One fold of one configuration: balanced accuracy on the held-out fold, fit time in seconds."""

    fold: int
    score: float
    fit_seconds: float


def fold_indices(name: str, y: np.ndarray, folds: int = FOLDS, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fixed split of task ``name``: ``folds`` (train, test) index pairs, stratified by ``y`` (shape ``(n,)``)."""
    from sklearn.model_selection import StratifiedKFold

    task_seed = (zlib.crc32(name.encode()) + seed) % (2**32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=task_seed)
    return list(splitter.split(np.zeros(len(y)), y))


def cross_validate(config: Configuration, x: pd.DataFrame, y: np.ndarray,
                   splits: list[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> list[FoldResult]:
    """Fit ``config`` on each training fold and score balanced accuracy on its test fold.

    A fit that fails (a solver error on a degenerate fold) scores ``1 / classes``, the balanced
    accuracy of always predicting one class, and is kept: a configuration that breaks on a task is a
    bad configuration for it, not a missing value.
    """
    from sklearn.metrics import balanced_accuracy_score
    from threadpoolctl import threadpool_limits

    results = []
    for fold, (train, test) in enumerate(splits):
        estimator = build_estimator(config.learner, config.values, seed=seed, train_rows=len(train))
        start = time.perf_counter()
        try:
            # One thread per fit: parallelism comes from processes (``--jobs``); OpenMP threads on a
            # busy machine make a histogram-boosting fit on 150 rows ten times slower.
            with warnings.catch_warnings(), threadpool_limits(1):
                warnings.simplefilter("ignore")
                estimator.fit(x.iloc[train], y[train])
                predicted = estimator.predict(x.iloc[test])
            score = float(balanced_accuracy_score(y[test], predicted))
        except Exception:  # any estimator failure on this fold scores as a constant prediction
            score = 1.0 / len(np.unique(y))  # balanced accuracy of a constant prediction
        results.append(FoldResult(fold, score, time.perf_counter() - start))
    return results
