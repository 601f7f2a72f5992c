"""Meta-feature-informed PMF: the new task's latent row is predicted from its meta-features and used
as the prior mean of the new-row posterior, so that the first PMF proposals already reflect the task.

The PMF model and its Bayesian new row are those of :mod:`metalab.automl.pmf` (Fusi, Sheth &
Elibol, NeurIPS 2018; linear case). The prior of a row's latent factors is centred on a regression
on that row's side information, as in regression-based latent factor models (Agarwal & Chen,
KDD 2009, eq. (1): ``u_i ~ N(G x_i, sigma^2 I)``): the known tasks' fitted rows ``w_t = [b_t, U_t]``
are regressed on their standardised meta-features ``x_t`` by ridge regression (Hoerl & Kennard
1970; one output per latent dimension), and the new row's prior becomes

    ``[b*, U*] ~ N(m_0, S_0)``,  ``m_0 = [0, B(x*)]``,  ``S_0 = diag(1, Cov_cv(U_t - B_cv(x_t)))``

(the prior of Bishop 2006, eq. (3.48), with a non-zero mean; posterior eq. (3.50)-(3.51)): the
latent factors' prior mean is the regression's prediction and their covariance is the covariance
of the regression's cross-validated residuals (``folds``-fold, so the prior is as wide as the
prediction is actually wrong on the known tasks); the bias ``b*`` keeps the module's ``N(0, 1)``
(the new row is centred by the mean of its own observations, so its level carries no information).

The search starts, as :mod:`metalab.automl.portfolio_pmf`, with the first ``start`` members of the
greedy portfolio, then expected improvement under the informed posterior. ``start`` and the ridge
penalty ``alpha`` were chosen on the leave-one-dataset-out benchmark's even-indexed tasks and
checked on the odd-indexed ones (``benchmarks/automl/RESULTS.md``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from metalab.automl.metadataset import MetaDataset
from metalab.automl.pmf import MatrixFactorisation, PMFOptimiser
from metalab.automl.portfolio_pmf import PORTFOLIO_START, portfolio_pmf_optimiser
from metalab.automl.warmstart import MetaFeatureScaler

#: Portfolio members evaluated before the informed PMF takes over (chosen on the even-indexed tasks: the same 3).
START = PORTFOLIO_START
#: Ridge penalty of the meta-features -> latent row regression (chosen on the even-indexed tasks).
ALPHA = 1.0
#: Folds of the cross-validation whose residuals set the prior covariance of the latent factors.
FOLDS = 5


def latent_rows(model: MatrixFactorisation) -> np.ndarray:
    """The fitted rows ``[b_t, U_t]`` of the known tasks, shape ``(tasks, rank + 1)``."""
    return np.column_stack([model.b, model.U])


def row_prior(model: MatrixFactorisation, known: pd.DataFrame, query: pd.Series, alpha: float = ALPHA,
              folds: int = FOLDS, seed: int = 0, regression: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Prior mean ``(rank + 1,)`` and covariance ``(rank + 1, rank + 1)`` of a new task's ``[b*, U*]``
    from its meta-features ``query``, by ridge regression of ``model``'s rows on the known tasks'
    meta-features ``known`` (rows in ``model``'s task order; median-imputed and standardised by
    :class:`~metalab.automl.warmstart.MetaFeatureScaler` fitted on ``known`` alone). ``regression``
    (an unfitted scikit-learn multi-output regressor) replaces ``Ridge(alpha)``."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_predict

    rows = latent_rows(model)
    if len(known) != len(rows):
        raise ValueError(f"{len(known)} rows of meta-features for {len(rows)} rows of the factorisation")
    scaler = MetaFeatureScaler.fit(known)
    x, x_query = scaler.transform(known), scaler.transform(query)
    regression = Ridge(alpha=alpha) if regression is None else regression
    predicted = cross_val_predict(regression, x, rows, cv=KFold(min(folds, len(rows)), shuffle=True,
                                                                 random_state=seed))
    size = rows.shape[1]
    covariance = np.cov((rows - predicted).T) + 1e-6 * np.eye(size)
    mean = regression.fit(x, rows).predict(x_query)[0]
    # the bias: the new row is centred by its observed mean, so it keeps the uninformed N(0, 1)
    mean[0] = 0.0
    covariance[0, :] = covariance[:, 0] = 0.0
    covariance[0, 0] = 1.0
    return mean, covariance


def metafeature_pmf_optimiser(meta: MetaDataset, features: pd.Series, start: int = START, alpha: float = ALPHA,
                              rank: int = 5, l2: float = 0.1, seed: int = 0) -> PMFOptimiser:
    """A :class:`~metalab.automl.pmf.PMFOptimiser` fitted on ``meta.scores`` whose first ``start``
    proposals are ``meta``'s greedy portfolio's first members and whose new-row prior is predicted
    from the new task's meta-features ``features`` (:func:`row_prior`)."""
    optimiser = portfolio_pmf_optimiser(meta, start=start, rank=rank, l2=l2, seed=seed)
    optimiser.prior_mean, optimiser.prior_covariance = row_prior(optimiser.model, meta.metafeatures, features,
                                                                 alpha=alpha, seed=seed)
    return optimiser
