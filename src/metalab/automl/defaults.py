"""Learned defaults, greedy portfolios and tunability, from a meta-dataset's score matrix.

* Learned default: the one configuration with the lowest mean normalised regret over the meta-
  dataset's tasks (Probst, Boulesteix & Bischl, "Tunability", JMLR 2019, Sec. 3, eq. (3):
  ``theta* = argmin_theta E[R(theta)]``, here with regret normalised per task).
* Greedy portfolio: configurations added one at a time, each the one that most lowers the mean
  over tasks of the best regret within the portfolio (Wistuba, Schilling & Schmidt-Thieme 2015;
  Feurer et al., "Auto-sklearn 2.0", 2022, Alg. 1); the first member is the learned default.
* Tunability of a learner: the mean over tasks of the score its best configuration gains over its
  learned default (Probst et al. 2019, eq. (5), ``d = E[R(theta*) - R(theta_best)]``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from metalab.automl.metadataset import MetaDataset


def learned_default(meta: MetaDataset, learner: str | None = None) -> int:
    """Index of the configuration (of ``learner``, if given) with the lowest mean normalised regret."""
    regret = meta.normalised_regret().mean(0)
    allowed = np.array([learner is None or c.learner == learner for c in meta.configurations])
    return int(np.argmin(np.where(allowed, regret, np.inf)))


def greedy_portfolio(meta: MetaDataset, size: int) -> list[int]:
    """``size`` configuration indices, greedily minimising ``mean_task min_{c in portfolio} regret[task, c]``.

    Ties go to the lower index; once every task has regret 0 the remaining members are the next
    best by mean regret, so the list always has ``min(size, configurations)`` distinct entries.
    """
    regret = meta.normalised_regret()  # (tasks, configurations)
    tasks, configurations = regret.shape
    size = min(size, configurations)
    chosen: list[int] = []
    best = np.full(tasks, np.inf)
    mean_regret = regret.mean(0)
    for _ in range(size):
        candidate_loss = np.minimum(best[:, None], regret).mean(0)  # (configurations,)
        candidate_loss[chosen] = np.inf
        # among equal gains prefer the configuration that is better on average (a deterministic tie-break)
        order = np.lexsort((mean_regret, np.round(candidate_loss, 12)))
        pick = int(next(i for i in order if i not in chosen))
        chosen.append(pick)
        best = np.minimum(best, regret[:, pick])
    return chosen


def tunability(meta: MetaDataset) -> pd.DataFrame:
    """Per learner: its learned default, the mean balanced accuracy of that default, of the
    learner's best configuration per task, and their difference (the learner's tunability)."""
    rows = []
    for learner in meta.learners():
        columns = [i for i, c in enumerate(meta.configurations) if c.learner == learner]
        default = learned_default(meta, learner)
        sklearn_default = next(i for i in columns if meta.configurations[i].id.endswith("-default"))
        best = meta.scores[:, columns].max(1)
        rows.append({
            "learner": learner,
            "learned_default": meta.configurations[default].id,
            "score_sklearn_default": float(meta.scores[:, sklearn_default].mean()),
            "score_learned_default": float(meta.scores[:, default].mean()),
            "score_tuned": float(best.mean()),
            "tunability": float((best - meta.scores[:, default]).mean()),
        })
    return pd.DataFrame(rows)
