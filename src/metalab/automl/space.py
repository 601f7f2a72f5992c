"""The configuration space: five scikit-learn learners, their hyperparameters, and the fixed design.

Every hyperparameter lives on the unit interval ``u in [0, 1]`` and is mapped to its value by a
log-uniform, uniform or categorical transform, so that one flat encoding (the learner, then
``u_1 .. u_4``) describes every configuration. That encoding is the search space that every
optimiser of the package sees (Optuna's samplers, the transfer surrogates, the meta-models): a
learner with fewer than four hyperparameters ignores the trailing coordinates.

The design is, per learner, a scrambled Sobol sequence over its unit cube (Sobol 1967; scipy's
``qmc.Sobol``) plus scikit-learn's default configuration of that learner, all fixed by one seed.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Coordinates of the flat encoding: every learner maps ``u_1 .. u_4`` to its hyperparameters.
UNIT_DIMENSIONS = 4


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter and its transform from ``u in [0, 1]``.

    ``kind`` is ``"log"`` (``low * (high/low)**u``), ``"linear"`` (``low + u (high - low)``),
    ``"log_int"`` (the log transform rounded) or ``"choice"`` (``choices[floor(u * len)]``).
    """

    name: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    choices: tuple[Any, ...] = ()

    def value(self, u: float) -> Any:
        u = min(max(float(u), 0.0), 1.0)
        if self.kind == "log":
            return float(self.low * (self.high / self.low) ** u)
        if self.kind == "linear":
            return float(self.low + u * (self.high - self.low))
        if self.kind == "log_int":
            return int(round(self.low * (self.high / self.low) ** u))
        if self.kind == "choice":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        raise ValueError(f"hyperparameter {self.name}: unknown kind {self.kind!r}; use log, linear, log_int or choice")

    def unit(self, value: Any) -> float:
        """The inverse transform: the ``u`` of ``value`` (the middle of its bin for a choice)."""
        if self.kind in ("log", "log_int"):
            return float(np.clip(math.log(float(value) / self.low) / math.log(self.high / self.low), 0.0, 1.0))
        if self.kind == "linear":
            return float(np.clip((float(value) - self.low) / (self.high - self.low), 0.0, 1.0))
        if self.kind == "choice":
            return (self.choices.index(value) + 0.5) / len(self.choices)
        raise ValueError(f"hyperparameter {self.name}: unknown kind {self.kind!r}")


@dataclass(frozen=True)
class Learner:
    """A scikit-learn estimator family, its hyperparameters and scikit-learn's defaults for them."""

    name: str
    hyperparameters: tuple[Hyperparameter, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    design_size: int = 16

    def values(self, unit: np.ndarray) -> dict[str, Any]:
        """``u_1 .. u_d`` (shape ``(>= d,)``) -> ``{name: value}``."""
        return {h.name: h.value(u) for h, u in zip(self.hyperparameters, unit)}

    def unit(self, values: dict[str, Any]) -> np.ndarray:
        """``{name: value}`` -> the flat unit encoding, shape ``(UNIT_DIMENSIONS,)`` (unused coordinates 0.5)."""
        unit = np.full(UNIT_DIMENSIONS, 0.5)
        for i, h in enumerate(self.hyperparameters):
            unit[i] = h.unit(values[h.name])
        return unit


#: The learners and their spaces. Ranges follow the tunability study of Probst et al. (2019,
#: Table 1) where it covers the learner, narrowed to what a 1,000-row table needs.
LEARNERS: dict[str, Learner] = {
    learner.name: learner
    for learner in (
        Learner(
            "logreg",
            (Hyperparameter("C", "log", 1e-4, 1e4),
             Hyperparameter("class_weight", "choice", choices=(None, "balanced"))),
            {"C": 1.0, "class_weight": None},
            design_size=16,
        ),
        Learner(
            "svm",
            (Hyperparameter("C", "log", 1e-3, 1e3), Hyperparameter("gamma", "log", 1e-4, 1e1)),
            {"C": 1.0, "gamma": "scale"},
            design_size=32,
        ),
        Learner(
            "knn",
            (
                Hyperparameter("n_neighbors", "log_int", 1, 64),
                Hyperparameter("weights", "choice", choices=("uniform", "distance")),
                Hyperparameter("p", "choice", choices=(1, 2)),
            ),
            {"n_neighbors": 5, "weights": "uniform", "p": 2},
            design_size=16,
        ),
        Learner(
            "rf",
            (
                Hyperparameter("max_features", "log", 0.05, 1.0),
                Hyperparameter("min_samples_leaf", "log_int", 1, 32),
                Hyperparameter("bootstrap", "choice", choices=(True, False)),
            ),
            {"max_features": "sqrt", "min_samples_leaf": 1, "bootstrap": True},
            design_size=32,
        ),
        Learner(
            "hgb",
            (
                Hyperparameter("learning_rate", "log", 0.01, 0.5),
                Hyperparameter("max_leaf_nodes", "log_int", 4, 64),
                Hyperparameter("min_samples_leaf", "log_int", 2, 64),
                Hyperparameter("l2_regularization", "log", 1e-6, 10.0),
            ),
            {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 0.0},
            design_size=32,
        ),
    )
}

#: Fixed settings that are not searched: the number of trees and boosting rounds (kept moderate so
#: that the meta-dataset builds in about two CPU-hours), and iteration caps.
RF_TREES = 64
HGB_ROUNDS = 64


@dataclass(frozen=True)
class Configuration:
    """One point of the design: ``learner`` with ``values``; ``unit`` is its flat encoding, shape (4,)."""

    id: str
    learner: str
    values: dict[str, Any]
    unit: tuple[float, ...]

    def as_json(self) -> str:
        return json.dumps(self.values, sort_keys=True)


def configuration(learner: str, unit: np.ndarray, config_id: str) -> Configuration:
    """The configuration of ``learner`` at the unit point ``unit`` (shape ``(>= d,)``)."""
    spec = LEARNERS[learner]
    padded = np.full(UNIT_DIMENSIONS, 0.5)
    padded[: len(spec.hyperparameters)] = np.asarray(unit, dtype=float)[: len(spec.hyperparameters)]
    return Configuration(config_id, learner, spec.values(padded), tuple(float(u) for u in padded))


def design(seed: int = 0, per_learner: int | None = None) -> list[Configuration]:
    """The fixed design: per learner, ``design_size`` scrambled Sobol points and scikit-learn's default.

    Deterministic given ``seed``; the ids (``svm-07``, ``svm-default``) are stable for a given design.
    ``per_learner`` replaces every learner's ``design_size`` (the tests' small meta-datasets).
    """
    from scipy.stats import qmc

    configurations: list[Configuration] = []
    for index, (name, spec) in enumerate(LEARNERS.items()):
        sobol = qmc.Sobol(d=len(spec.hyperparameters), scramble=True, seed=seed * 1000 + index)
        points = sobol.random(per_learner or spec.design_size)
        configurations += [configuration(name, point, f"{name}-{i:02d}") for i, point in enumerate(points)]
        default_unit = _default_unit(spec)
        configurations.append(Configuration(f"{name}-default", name, dict(spec.defaults), tuple(default_unit)))
    return configurations


def _default_unit(spec: Learner) -> np.ndarray:
    """The flat encoding of scikit-learn's defaults; a default outside the range (``"sqrt"``) is mapped
    to where it usually lands (``sqrt(p)/p`` for 16 features)."""
    stand_ins = {"sqrt": 0.25, "scale": 0.1}
    unit = np.full(UNIT_DIMENSIONS, 0.5)
    for i, h in enumerate(spec.hyperparameters):
        value = spec.defaults[h.name]
        value = stand_ins.get(value, value) if isinstance(value, str) and h.kind != "choice" else value
        unit[i] = h.unit(max(value, 1e-6) if h.kind == "log" else value)
    return unit


def design_fingerprint(configurations: list[Configuration]) -> str:
    """A short hash of the design (ids, learners, values): a meta-dataset built on another design is refused."""
    text = json.dumps([(c.id, c.learner, c.values) for c in configurations], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def snap(learner: str, unit: np.ndarray, configurations: list[Configuration]) -> Configuration:
    """The design's configuration of ``learner`` nearest to ``unit`` (Euclidean in the learner's own unit
    coordinates): how an optimiser's proposal is scored in the tabular benchmark."""
    spec = LEARNERS[learner]
    d = len(spec.hyperparameters)
    candidates = [c for c in configurations if c.learner == learner]
    if not candidates:
        raise ValueError(f"the design has no configuration of learner {learner!r}")
    points = np.array([c.unit[:d] for c in candidates])
    distances = np.linalg.norm(points - np.asarray(unit, dtype=float)[:d], axis=1)
    return candidates[int(np.argmin(distances))]


def build_estimator(learner: str, values: dict[str, Any], seed: int = 0, train_rows: int | None = None):
    """The scikit-learn pipeline of one configuration: impute, encode categoricals, scale (for the
    distance- and margin-based learners), then the estimator.

    The pipeline takes a DataFrame whose object/category/bool columns are categorical. ``train_rows``
    caps k-nearest neighbours' k at the training set's size (a design's k=64 on a 60-row fold).
    """
    from sklearn.compose import make_column_selector, make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    scale = learner in ("logreg", "svm", "knn")
    numeric = make_pipeline(SimpleImputer(strategy="median"), *([StandardScaler()] if scale else []))
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(handle_unknown="ignore", max_categories=16, sparse_output=False),
    )
    preprocess = make_column_transformer(
        (numeric, make_column_selector(dtype_include="number")),
        (categorical, make_column_selector(dtype_exclude="number")),
    )
    if learner == "logreg":
        model = LogisticRegression(C=values["C"], class_weight=values["class_weight"], max_iter=500)
    elif learner == "svm":
        model = SVC(C=values["C"], gamma=values["gamma"], cache_size=200, max_iter=200_000)
    elif learner == "knn":
        k = values["n_neighbors"] if train_rows is None else min(values["n_neighbors"], train_rows)
        model = KNeighborsClassifier(n_neighbors=k, weights=values["weights"], p=values["p"])
    elif learner == "rf":
        model = RandomForestClassifier(
            n_estimators=RF_TREES, max_features=values["max_features"], min_samples_leaf=values["min_samples_leaf"],
            bootstrap=values["bootstrap"], random_state=seed, n_jobs=1,
        )
    elif learner == "hgb":
        model = HistGradientBoostingClassifier(
            learning_rate=values["learning_rate"], max_leaf_nodes=values["max_leaf_nodes"],
            min_samples_leaf=values["min_samples_leaf"], l2_regularization=values["l2_regularization"],
            max_iter=HGB_ROUNDS, early_stopping=False, random_state=seed,
        )
    else:
        raise ValueError(f"unknown learner {learner!r}; the learners are {', '.join(LEARNERS)}")
    return make_pipeline(preprocess, model)


def suggest_configuration(trial, learners: list[str] | None = None) -> tuple[str, np.ndarray]:
    """Ask an Optuna trial for a point of the flat space: ``learner`` (categorical) and ``u1``..``u4``
    in [0, 1], always all four, so that the space is the same for every trial (what Optuna's
    multivariate TPE and GP samplers need). Returns ``(learner, unit)``, ``unit`` of shape (4,)."""
    learner = trial.suggest_categorical("learner", list(learners or LEARNERS))
    unit = np.array([trial.suggest_float(f"u{i + 1}", 0.0, 1.0) for i in range(UNIT_DIMENSIONS)])
    return learner, unit
