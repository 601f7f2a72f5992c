"""Warm-started hyperparameter optimisation: the best configurations of the k most similar tasks,
by meta-features, evaluated first (Feurer, Springenberg & Hutter, AAAI 2015, Sec. 3; the
meta-learning step of auto-sklearn, Feurer et al., NeurIPS 2015, Sec. 3.1).

Similarity is the L1 distance between standardised meta-feature vectors (auto-sklearn's choice);
the configurations become the first trials of an Optuna study through ``study.enqueue_trial``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metalab.automl.metadataset import MetaDataset
from metalab.automl.space import UNIT_DIMENSIONS, Configuration


@dataclass
class MetaFeatureScaler:
    """Median imputation then z-scoring, fitted on the meta-features of the known tasks only.

    Columns that are missing for every known task or constant over them are dropped (they carry
    no distance information); ``transform`` imputes a new task's missing values by the medians.
    """

    columns: list[str]
    medians: np.ndarray
    means: np.ndarray
    scales: np.ndarray

    @classmethod
    def fit(cls, features: pd.DataFrame) -> MetaFeatureScaler:
        values = features.to_numpy(float)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: dropped just below
            medians = np.nanmedian(values, axis=0)
        usable = np.isfinite(medians)
        filled = np.where(np.isnan(values), medians, values)
        means, scales = filled.mean(0), filled.std(0)
        usable &= scales > 1e-12
        return cls([c for c, keep in zip(features.columns, usable) if keep], medians[usable], means[usable],
                   scales[usable])

    def transform(self, features: pd.DataFrame | pd.Series) -> np.ndarray:
        """Standardised meta-features, shape ``(tasks, kept columns)`` (a Series gives one row)."""
        frame = features.to_frame().T if isinstance(features, pd.Series) else features
        values = frame.reindex(columns=self.columns).to_numpy(float)
        values = np.where(np.isnan(values), self.medians, values)
        # clip: a meta-feature far outside the known range should not decide the distance alone
        return np.clip((values - self.means) / self.scales, -10.0, 10.0)


def nearest_tasks(known: pd.DataFrame, query: pd.Series, k: int) -> list[tuple[str, float]]:
    """The ``k`` tasks of ``known`` (rows: tasks, columns: meta-features) nearest to ``query`` by L1
    distance between standardised meta-features, nearest first, as ``(task, distance)``."""
    scaler = MetaFeatureScaler.fit(known)
    distances = np.abs(scaler.transform(known) - scaler.transform(query)).sum(1)
    order = np.argsort(distances, kind="stable")[:k]
    return [(str(known.index[i]), float(distances[i])) for i in order]


def warm_start_configurations(meta: MetaDataset, query: pd.Series, k: int) -> list[int]:
    """The best configuration (by score) of each of the ``k`` nearest tasks, nearest first, without
    repeats: configuration indices into ``meta.configurations``."""
    chosen: list[int] = []
    for task, _ in nearest_tasks(meta.metafeatures, query, k):
        best = int(np.argmax(meta.scores[meta.index(task)]))
        if best not in chosen:
            chosen.append(best)
    return chosen


def trial_params(config: Configuration) -> dict[str, object]:
    """The Optuna parameters of a configuration in the flat search space (``learner``, ``u1``..``u4``)."""
    return {"learner": config.learner, **{f"u{i + 1}": float(config.unit[i]) for i in range(UNIT_DIMENSIONS)}}


def enqueue_configurations(study, configurations: list[Configuration]) -> None:
    """Make ``configurations`` the next trials of ``study`` (Optuna evaluates enqueued trials first, in order)."""
    for config in configurations:
        study.enqueue_trial(trial_params(config), skip_if_exists=True)
