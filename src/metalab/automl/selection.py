"""Algorithm selection meta-models: from a task's meta-features, predict the best learner (zero-
shot) and the score of every design configuration, hence a ranking of configurations.

The algorithm selection problem of Rice (1976), solved as supervised learning over the meta-
dataset (Brazdil et al., "Metalearning", 2nd ed. 2022, Ch. 2 and 5): a random forest classifier
for the learner, a multi-output random forest regressor for the configurations' balanced
accuracies, both on median-imputed, standardised meta-features.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from metalab.automl.metadataset import MetaDataset
from metalab.automl.warmstart import MetaFeatureScaler


class Predictor(Protocol):
    """A fitted scikit-learn estimator, as far as the selectors use it."""

    def predict(self, x: Any) -> Any: ...


def best_learners(meta: MetaDataset) -> list[str]:
    """Per task, the learner of its best configuration."""
    return [meta.configurations[int(i)].learner for i in np.argmax(meta.scores, axis=1)]


@dataclass
class MetaModel:
    """A scikit-learn estimator on standardised meta-features (what both meta-models below are)."""

    scaler: MetaFeatureScaler
    model: Predictor

    @classmethod
    def fitted(cls, meta: MetaDataset, model: Any, targets: Any) -> Any:
        """Fit ``model`` on ``meta``'s standardised meta-features to ``targets`` (one row per task)."""
        scaler = MetaFeatureScaler.fit(meta.metafeatures)
        model.fit(scaler.transform(meta.metafeatures), targets)
        return cls(scaler, model)

    def _predict(self, features: pd.Series) -> Any:
        return self.model.predict(self.scaler.transform(features))[0]


class LearnerSelector(MetaModel):
    """Random forest: standardised meta-features -> the learner of the best configuration."""

    @classmethod
    def fit(cls, meta: MetaDataset, seed: int = 0) -> LearnerSelector:
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
        return cls.fitted(meta, model, best_learners(meta))

    def predict(self, features: pd.Series) -> str:
        return str(self._predict(features))


class ConfigurationRanker(MetaModel):
    """Multi-output random forest: standardised meta-features -> every configuration's score."""

    @classmethod
    def fit(cls, meta: MetaDataset, seed: int = 0) -> ConfigurationRanker:
        from sklearn.ensemble import RandomForestRegressor

        model = RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=1)
        return cls.fitted(meta, model, meta.scores)

    def predict(self, features: pd.Series) -> np.ndarray:
        """Predicted balanced accuracy of every configuration, shape ``(configurations,)``."""
        return np.asarray(self._predict(features), dtype=float)

    def ranking(self, features: pd.Series) -> list[int]:
        """Configuration indices, best predicted first."""
        return [int(i) for i in np.argsort(-self.predict(features), kind="stable")]
