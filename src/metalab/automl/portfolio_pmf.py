"""Portfolio, then model: the first ``k`` evaluations on a new task are the first ``k`` members of
the greedy portfolio of the known tasks, every later one is chosen by PMF + expected improvement
conditioned on what those evaluations returned.

The two parts are the published ones: the greedy portfolio (Wistuba, Schilling & Schmidt-Thieme,
"Sequential Model-Free Hyperparameter Tuning", ICDM 2015; Feurer et al., "Auto-sklearn 2.0",
JMLR 2022, Alg. 1: each member minimises ``mean_t min_{c in P} regret[t, c]``, see
:func:`metalab.automl.defaults.greedy_portfolio`), and Bayesian optimisation in the latent space
of a probabilistic matrix factorisation (Fusi, Sheth & Elibol, NeurIPS 2018, Sec. 3; the linear
model of :mod:`metalab.automl.pmf`: new-row posterior by Bayesian linear regression, Bishop 2006,
eq. (3.53)-(3.59), next point by EI, Jones et al. 1998, eq. (15)). Fusi et al. also start BO
from an initial design taken from the training matrix instead of at random; here that design is
the portfolio, whose members are chosen to cover the known tasks *together*, so the first
evaluations are diverse and informative about which latent direction the new task follows.

``k`` (:data:`PORTFOLIO_START`) was chosen on the leave-one-dataset-out benchmark's even-indexed
tasks and confirmed on the odd-indexed ones (``benchmarks/automl/RESULTS.md``).
"""
from __future__ import annotations

import numpy as np

from metalab.automl.defaults import greedy_portfolio
from metalab.automl.metadataset import MetaDataset
from metalab.automl.pmf import PMFOptimiser

#: Portfolio members evaluated before PMF takes over (chosen on the even-indexed benchmark tasks).
PORTFOLIO_START = 3


def portfolio_pmf_optimiser(meta: MetaDataset, start: int = PORTFOLIO_START, rank: int = 5, l2: float = 0.1,
                            seed: int = 0) -> PMFOptimiser:
    """A :class:`~metalab.automl.pmf.PMFOptimiser` fitted on ``meta.scores`` whose first ``start``
    proposals are the first ``start`` members of ``meta``'s greedy portfolio."""
    if start < 0:
        raise ValueError(f"start must be >= 0, not {start}")
    initial = greedy_portfolio(meta, start) if start else []
    return PMFOptimiser(np.asarray(meta.scores, dtype=float), rank=rank, l2=l2, seed=seed, initial=initial)
