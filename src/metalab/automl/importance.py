"""Hyperparameter importance by functional ANOVA, per learner, over the meta-dataset.

fANOVA (Hutter, Hoos & Leyton-Brown, ICML 2014, Sec. 3, eq. (3)-(5)) decomposes the variance of
the performance over the configuration space into the fractions explained by each hyperparameter's
main effect. The computation is Optuna's ``FanovaImportanceEvaluator`` (a random forest fitted to
the trials, then the exact marginals of its trees); across tasks we report the mean and the
standard deviation of the per-task importances, as van Rijn & Hutter (KDD 2018, Sec. 4) do.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from metalab.automl.metadataset import MetaDataset
from metalab.automl.space import LEARNERS


def fanova_importance(points: np.ndarray, values: np.ndarray, names: list[str], seed: int = 0) -> dict[str, float]:
    """Importances (summing to 1) of the inputs ``names`` for ``values`` observed at ``points``.

    ``points``: shape ``(n, d)`` in the unit cube; ``values``: shape ``(n,)``. Each point becomes a
    completed trial of an in-memory Optuna study, whose fANOVA evaluator does the decomposition.
    """
    import optuna
    from optuna.distributions import BaseDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions: dict[str, BaseDistribution] = {name: FloatDistribution(0.0, 1.0) for name in names}
    trials = [
        optuna.trial.create_trial(params={n: float(p) for n, p in zip(names, point)}, distributions=distributions,
                                  value=float(value))
        for point, value in zip(points, values)
    ]
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=seed), normalize=True)
    return {name: float(importances.get(name, 0.0)) for name in names}


def learner_importance(meta: MetaDataset, learner: str, seed: int = 0) -> pd.DataFrame:
    """Per task, the fANOVA importances of ``learner``'s hyperparameters over its design points:
    a DataFrame (tasks, hyperparameters). Tasks on which the learner's scores do not vary are left out."""
    spec = LEARNERS[learner]
    names = [h.name for h in spec.hyperparameters]
    columns = [i for i, c in enumerate(meta.configurations) if c.learner == learner and not c.id.endswith("-default")]
    points = np.array([meta.configurations[i].unit[: len(names)] for i in columns])
    rows = {}
    for t, task in enumerate(meta.tasks):
        values = meta.scores[t, columns]
        if np.ptp(values) < 1e-9:
            continue
        rows[task] = fanova_importance(points, values, names, seed)
    return pd.DataFrame.from_dict(rows, orient="index", columns=names)


def importance_table(meta: MetaDataset, seed: int = 0) -> pd.DataFrame:
    """One row per (learner, hyperparameter): mean and standard deviation of the importance over tasks,
    and the number of tasks it was computed on."""
    rows = []
    for learner in meta.learners():
        per_task = learner_importance(meta, learner, seed)
        for name in per_task.columns:
            rows.append({"learner": learner, "hyperparameter": name, "importance_mean": float(per_task[name].mean()),
                         "importance_std": float(per_task[name].std(ddof=1)) if len(per_task) > 1 else 0.0,
                         "tasks": int(per_task[name].notna().sum())})
    return pd.DataFrame(rows)


def plot_importance(table: pd.DataFrame, path: str | Path) -> Path:
    """A bar chart (one panel per learner, mean +- std over tasks) of :func:`importance_table`, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metalab.utils.io import atomic_write

    learners = list(dict.fromkeys(table.learner))
    figure, axes = plt.subplots(1, len(learners), figsize=(3.2 * len(learners), 3.0), squeeze=False)
    for axis, learner in zip(axes[0], learners):
        rows = table[table.learner == learner]
        axis.bar(rows.hyperparameter, rows.importance_mean, yerr=rows.importance_std, capsize=3, color="tab:blue")
        axis.set_title(f"{learner} (mean +- std over tasks)", fontsize=9)
        axis.set_ylim(0, 1)
        axis.tick_params(axis="x", rotation=45)
    axes[0][0].set_ylabel("fANOVA importance")
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)
    return path
