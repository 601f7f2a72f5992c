"""Probabilistic matrix factorisation of the task x configuration score matrix, and Bayesian
optimisation in its latent space (Fusi, Sheth & Elibol, "Probabilistic Matrix Factorization for
Automated Machine Learning", NeurIPS 2018).

The model (Salakhutdinov & Mnih, NeurIPS 2007, eq. (1)-(4)): ``Y[t, c] = mu[c] + b[t] + U[t] . V[c]
+ noise`` with Gaussian priors on the factors; its MAP estimate with missing entries is found by
alternating ridge regressions (each a closed form). Fusi et al. use a non-linear GP-LVM; this is
its linear special case, which keeps the fit exact and fast.

A new task ``*`` is a new row: with the configuration factors ``V`` fixed, its ``(b*, U*)`` has a
Gaussian posterior given the entries observed so far (Bayesian linear regression, Bishop 2006,
eq. (3.53)-(3.59)), hence a predictive mean and variance for every configuration, and the next
configuration is the one of highest expected improvement (Fusi et al. 2018, Sec. 3.2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm


@dataclass
class MatrixFactorisation:
    """A fitted factorisation: column offsets ``mu`` (m,), row biases ``b`` (n,), row factors
    ``U`` (n, r), column factors ``V`` (m, r) and the residual noise variance."""

    mu: np.ndarray
    b: np.ndarray
    U: np.ndarray
    V: np.ndarray
    noise: float

    def reconstruct(self) -> np.ndarray:
        """The model's matrix, shape ``(n, m)``: ``mu[c] + b[t] + U[t] . V[c]``."""
        return self.mu[None, :] + self.b[:, None] + self.U @ self.V.T


def factorise(Y: np.ndarray, rank: int = 5, l2: float = 0.1, iterations: int = 100,
              seed: int = 0) -> MatrixFactorisation:
    """MAP fit of the PMF model to ``Y`` (shape ``(n, m)``, NaN where unobserved) by alternating ridge
    regressions; ``l2`` is the ratio noise variance / prior variance of the factors."""
    Y = np.asarray(Y, dtype=float)
    observed = ~np.isnan(Y)
    if not observed.any(1).all() or not observed.any(0).all():
        raise ValueError("every row and every column of the matrix needs at least one observed entry")
    n, m = Y.shape
    rng = np.random.default_rng(seed)
    mu = np.array([Y[observed[:, c], c].mean() for c in range(m)])
    b = np.zeros(n)
    U = rng.normal(scale=0.1, size=(n, rank))
    V = rng.normal(scale=0.1, size=(m, rank))
    eye = np.eye(rank + 1)
    for _ in range(iterations):
        # rows: [b_t, U_t] from the residual of column offsets, features [1, V_c]
        features = np.hstack([np.ones((m, 1)), V])
        for t in range(n):
            cols = observed[t]
            A, y = features[cols], Y[t, cols] - mu[cols]
            solution = np.linalg.solve(A.T @ A + l2 * eye, A.T @ y)
            b[t], U[t] = solution[0], solution[1:]
        # columns: [mu_c, V_c] from the residual of row biases, features [1, U_t]
        features = np.hstack([np.ones((n, 1)), U])
        for c in range(m):
            rows = observed[:, c]
            A, y = features[rows], Y[rows, c] - b[rows]
            regulariser = l2 * eye
            regulariser[0, 0] = 1e-9  # the column offset is not shrunk
            solution = np.linalg.solve(A.T @ A + regulariser, A.T @ y)
            mu[c], V[c] = solution[0], solution[1:]
    model = MatrixFactorisation(mu, b, U, V, 0.0)
    residual = (Y - model.reconstruct())[observed]
    model.noise = float(max(np.mean(residual**2), 1e-8))
    return model


def new_row_posterior(model: MatrixFactorisation, columns: list[int], values: np.ndarray,
                      prior_scale: float = 1.0, prior_mean: np.ndarray | None = None,
                      prior_covariance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and standard deviation, each shape ``(m,)``, of a new row after observing
    ``values`` at ``columns``: Bayesian linear regression of ``y - mu`` on ``[1, V]`` with the fitted
    noise and the prior ``N(prior_mean, prior_covariance)`` on ``[b*, U*]`` (default
    ``N(0, prior_scale^2 I)``). Bishop (2006), eq. (3.50)-(3.51) and (3.58)-(3.59):
    ``S_N^-1 = S_0^-1 + A^T A / noise``, ``m_N = S_N (S_0^-1 m_0 + A^T (y - mu) / noise)``; with
    nothing observed this is the prior predictive."""
    features = np.hstack([np.ones((len(model.mu), 1)), model.V])  # (m, r + 1)
    size = features.shape[1]
    mean0 = np.zeros(size) if prior_mean is None else np.asarray(prior_mean, dtype=float)
    precision = (np.eye(size) / prior_scale**2 if prior_covariance is None
                 else np.linalg.inv(np.asarray(prior_covariance, dtype=float)))
    A = features[columns]
    residual = np.asarray(values, dtype=float) - model.mu[columns]
    covariance = np.linalg.inv(precision + A.T @ A / model.noise)
    weights = covariance @ (precision @ mean0 + A.T @ residual / model.noise)
    mean = model.mu + features @ weights
    variance = np.einsum("ij,jk,ik->i", features, covariance, features) + model.noise
    return mean, np.sqrt(variance)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """EI for maximisation (Jones et al. 1998, eq. (15)): ``(mu - best) Phi(z) + sigma phi(z)``."""
    std = np.maximum(std, 1e-12)
    z = (mean - best) / std
    return (mean - best) * norm.cdf(z) + std * norm.pdf(z)


class PMFOptimiser:
    """Proposes configurations for a new task from a factorisation of the known tasks' scores.

    The first proposals are ``initial`` (an initial design, in order; none by default); then, with
    nothing observed yet, the configuration of highest prior predictive mean (with the default prior
    ``N(0, I)`` on the new row: the highest column offset, the best on average); each later one
    maximises expected improvement under the new row's posterior, among the configurations not yet
    evaluated. ``prior_mean`` / ``prior_covariance`` (set after construction, e.g. by
    :mod:`metalab.automl.metafeature_pmf`) replace that default prior on ``[b*, U*]``.
    """

    def __init__(self, scores: np.ndarray, rank: int = 5, l2: float = 0.1, seed: int = 0,
                 initial: list[int] | None = None):
        # rows standardised per task, so that the factors model the shape, not each task's level
        centred = scores - scores.mean(1, keepdims=True)
        self.scale = float(np.std(centred)) or 1.0
        self.model = factorise(centred / self.scale, rank=rank, l2=l2, seed=seed)
        self.initial = [int(i) for i in (initial or [])]
        self.prior_mean: np.ndarray | None = None
        self.prior_covariance: np.ndarray | None = None
        self.columns: list[int] = []
        self.values: list[float] = []

    def observe(self, column: int, value: float) -> None:
        self.columns.append(int(column))
        self.values.append(float(value))

    def propose(self) -> int:
        m = len(self.model.mu)
        pending = [i for i in self.initial if i not in self.columns]
        if pending and len(self.columns) < len(self.initial):
            return pending[0]
        if not self.columns:
            prior_mean, _ = new_row_posterior(self.model, [], np.zeros(0), prior_mean=self.prior_mean,
                                              prior_covariance=self.prior_covariance)
            return int(np.argmax(prior_mean))
        values = np.array(self.values)
        level = values.mean()
        mean, std = new_row_posterior(self.model, self.columns, (values - level) / self.scale,
                                      prior_mean=self.prior_mean, prior_covariance=self.prior_covariance)
        ei = expected_improvement(mean, std, float(((values - level) / self.scale).max()))
        ei[self.columns] = -np.inf
        if np.isneginf(ei).all():
            raise ValueError(f"all {m} configurations are evaluated; nothing left to propose")
        return int(np.argmax(ei))
