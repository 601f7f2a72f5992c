"""Learned defaults, greedy portfolios and tunability on a hand-made score matrix."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metalab.automl.defaults import greedy_portfolio, learned_default, tunability
from metalab.automl.metadataset import MetaDataset
from metalab.automl.space import design


def hand_meta() -> MetaDataset:
    # 4 tasks x 10 configurations (design with one point per learner: logreg-00, logreg-default,
    # svm-00, svm-default, ...). Column 0 is perfect on tasks 0-1 and worst on 2-3, column 2 the
    # reverse, column 4 good (0.8 of the range) everywhere; the rest are at 0.5 of the range.
    configurations = design(per_learner=1)
    scores = np.full((4, 10), 0.5)
    scores[:, 0] = [1.0, 1.0, 0.0, 0.0]
    scores[:, 2] = [0.0, 0.0, 1.0, 1.0]
    scores[:, 4] = 0.8
    features = pd.DataFrame({"f": [0.0, 1.0, 2.0, 3.0]}, index=list("abcd"))
    return MetaDataset(list("abcd"), configurations, scores, np.zeros_like(scores), features)


def test_learned_default_minimises_mean_regret():
    meta = hand_meta()
    # mean normalised regret: column 0 and 2: 0.5; column 4: 0.2; others 0.5
    assert learned_default(meta) == 4
    assert learned_default(meta, "logreg") == 0  # 0.5 vs its default's 0.5: the first on a tie
    assert meta.configurations[learned_default(meta, "svm")].learner == "svm"


def test_greedy_portfolio_covers_the_tasks():
    meta = hand_meta()
    # step 1: column 4 (mean regret 0.2); step 2: adding 0 gives mean(0, 0, .2, .2) = 0.1, adding
    # 2 the same; the tie goes to the column better on average, then the lower index -> 0;
    # step 3: column 2 brings the regret to 0.
    assert greedy_portfolio(meta, 3) == [4, 0, 2]
    assert len(set(greedy_portfolio(meta, 10))) == 10


def test_tunability_is_the_gain_of_the_best_configuration_over_the_learned_default():
    table = tunability(hand_meta()).set_index("learner")
    # logreg: learned default column 0 (mean 0.5); best per task max(col 0, col 1) = 1, 1, .5, .5
    assert np.isclose(table.loc["logreg", "tunability"], 0.75 - 0.5)
    # knn (columns 4, 5): default column 4 is its best on every task
    assert np.isclose(table.loc["knn", "tunability"], 0.0)
