"""Meta-feature-informed PMF: the posterior with a non-zero prior mean against the other closed form
of Gaussian conditioning, the row prior on rows that are exactly linear in the meta-features, and
the optimiser finding a new synthetic task's best configuration at its first proposal (known answer)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metalab.automl.metadataset import MetaDataset
from metalab.automl.metafeature_pmf import metafeature_pmf_optimiser, row_prior
from metalab.automl.pmf import MatrixFactorisation, PMFOptimiser, new_row_posterior
from metalab.automl.space import design
from test_defaults import hand_meta
from test_portfolio_pmf import proposals


def test_posterior_with_a_prior_mean_matches_conditioning_the_joint_gaussian():
    rng = np.random.default_rng(0)
    m, r = 12, 2
    model = MatrixFactorisation(rng.normal(size=m), np.zeros(3), np.zeros((3, r)), rng.normal(size=(m, r)), 0.3)
    F = np.hstack([np.ones((m, 1)), model.V])
    m0 = np.array([0.2, -1.0, 0.5])
    root = rng.normal(size=(3, 3))
    S0 = root @ root.T + 0.1 * np.eye(3)
    # nothing observed: the prior predictive
    mean, std = new_row_posterior(model, [], np.zeros(0), prior_mean=m0, prior_covariance=S0)
    assert np.allclose(mean, model.mu + F @ m0)
    assert np.allclose(std**2, np.diag(F @ S0 @ F.T) + model.noise)
    # observed: w | y ~ N(m0 + S0 A^T K^-1 (y - mu - A m0), S0 - S0 A^T K^-1 A S0), K = A S0 A^T + noise I
    columns = [1, 4, 7]
    y = rng.normal(size=3)
    A = F[columns]
    K = A @ S0 @ A.T + model.noise * np.eye(3)
    w = m0 + S0 @ A.T @ np.linalg.solve(K, y - model.mu[columns] - A @ m0)
    cov = S0 - S0 @ A.T @ np.linalg.solve(K, A @ S0)
    mean, std = new_row_posterior(model, columns, y, prior_mean=m0, prior_covariance=S0)
    assert np.allclose(mean, model.mu + F @ w)
    assert np.allclose(std**2, np.diag(F @ cov @ F.T) + model.noise)
    # the default prior is N(0, prior_scale^2 I)
    a = new_row_posterior(model, columns, y, prior_scale=2.0)
    b = new_row_posterior(model, columns, y, prior_mean=np.zeros(3), prior_covariance=4.0 * np.eye(3))
    assert np.allclose(a[0], b[0]) and np.allclose(a[1], b[1])


def test_row_prior_recovers_rows_that_are_linear_in_the_metafeatures():
    rng = np.random.default_rng(1)
    tasks, p, r = 60, 3, 2
    x = rng.normal(size=(tasks + 1, p))
    G = rng.normal(size=(p, r))
    U = x @ G  # exactly linear: the held-out task's row is x* G
    model = MatrixFactorisation(np.zeros(5), rng.normal(size=tasks), U[:tasks], rng.normal(size=(5, r)), 0.1)
    known = pd.DataFrame(x[:tasks], columns=list("abc"))
    query = pd.Series(x[tasks], index=list("abc"))
    mean, covariance = row_prior(model, known, query, alpha=1e-6)
    assert np.allclose(mean[1:], U[tasks], atol=1e-4)
    assert mean[0] == 0.0 and covariance[0, 0] == 1.0 and np.all(covariance[0, 1:] == 0.0)
    assert np.all(np.diag(covariance)[1:] < 1e-4)  # the cross-validated residuals are ~0
    with pytest.raises(ValueError, match="rows"):
        row_prior(model, known.iloc[:-1], query)


def linear_metafeature_meta(tasks: int, seed: int = 0) -> tuple[MetaDataset, np.ndarray, pd.DataFrame]:
    """Rank-2 scores ``0.7 + 0.05 (column offset + U V^T)`` whose rows ``U`` are a linear function of
    two meta-features; the last 5 rows (and their meta-features) are returned apart as new tasks."""
    configurations = design(per_learner=4)
    rng = np.random.default_rng(seed)
    m = len(configurations)
    features = rng.normal(size=(tasks + 5, 2))
    U = features @ rng.normal(size=(2, 2))
    scores = 0.7 + 0.05 * (0.3 * rng.normal(size=m)[None, :] + U @ rng.normal(size=(2, m)))
    names = [f"t{i}" for i in range(tasks + 5)]
    frame = pd.DataFrame(features, index=names, columns=["f1", "f2"])
    meta = MetaDataset(names[:tasks], configurations, scores[:tasks], np.zeros((tasks, m)), frame.iloc[:tasks])
    return meta, scores[tasks:], frame.iloc[tasks:]


def test_first_proposal_is_the_new_tasks_best_when_the_metafeatures_determine_its_row():
    meta, new_tasks, new_features = linear_metafeature_meta(60)
    hits = plain_hits = 0
    for row, (_, features) in zip(new_tasks, new_features.iterrows()):
        optimiser = metafeature_pmf_optimiser(meta, features, start=0, alpha=1e-3, rank=2, l2=0.01)
        hits += optimiser.propose() == int(np.argmax(row))
        plain_hits += PMFOptimiser(meta.scores, rank=2, l2=0.01).propose() == int(np.argmax(row))
    # the uninformed prior proposes the same configuration (the best on average) for every task
    assert hits == 5 and plain_hits <= 1, (hits, plain_hits)


def test_first_proposals_are_the_portfolio_then_no_repeats():
    meta = hand_meta()  # its greedy portfolio is [4, 0, 2] (worked out in test_defaults)
    optimiser = metafeature_pmf_optimiser(meta, pd.Series({"f": 1.5}), start=3, rank=1)
    proposed = proposals(optimiser, np.linspace(0.1, 0.9, 10), 10)
    assert proposed[:3] == [4, 0, 2]
    assert sorted(proposed) == list(range(10))
    with pytest.raises(ValueError, match="start"):
        metafeature_pmf_optimiser(meta, pd.Series({"f": 1.5}), start=-1)
