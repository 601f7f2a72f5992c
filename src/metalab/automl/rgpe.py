"""Surrogate transfer: the ranking-weighted Gaussian process ensemble (RGPE) of Feurer, Letham &
Bakshy, "Scalable Meta-Learning for Bayesian Optimization using Ranking-Weighted Gaussian Process
Ensembles" (AutoML workshop at ICML 2018).

One Gaussian process per known task (fitted on that task's own scores only) and one on the new
task's observations are combined as ``f(x) ~ N(sum_i w_i mu_i(x), sum_i w_i^2 sigma_i^2(x))``
(Sec. 3, eq. (1)). The weight of model ``i`` is the fraction of posterior samples in which it has
the lowest ranking loss on the new task's observations (Sec. 3.1, eq. (2)-(3)): the number of
mis-ordered pairs; the new task's own model is scored on leave-one-out samples so that it cannot
win by interpolation. A known-task model whose median loss is worse than the 95th percentile of the
new model's is dropped (Sec. 3.2, weight dilution). The next configuration maximises expected
improvement over the design's configurations not yet evaluated.

The Gaussian processes are scikit-learn's (Matern 5/2 with automatic relevance determination plus
a white-noise term, hyperparameters by marginal likelihood).
"""
from __future__ import annotations

import warnings

import numpy as np

from metalab.automl.pmf import expected_improvement
from metalab.automl.space import LEARNERS, Configuration


def encode(configurations: list[Configuration]) -> np.ndarray:
    """Inputs of the surrogates: one-hot learner then the four unit coordinates, shape ``(m, learners + 4)``."""
    names = list(LEARNERS)
    onehot = np.array([[float(c.learner == n) for n in names] for c in configurations])
    return np.hstack([onehot, np.array([c.unit for c in configurations])])


def fit_gp(x: np.ndarray, y: np.ndarray, seed: int = 0, kernel=None):
    """A scikit-learn GP on inputs ``x`` (n, d) and standardised targets ``y`` (n,); its kernel's
    hyperparameters are fitted by marginal likelihood starting from ``kernel`` (the previous
    step's fitted kernel in a BO loop, which the optimiser then only refines)."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    if kernel is None:
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern(np.ones(x.shape[1]), (1e-2, 1e2), nu=2.5) \
            + WhiteKernel(1e-2, (1e-6, 1.0))
    gp = GaussianProcessRegressor(kernel, normalize_y=False, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp.fit(x, y)
    return gp


def standardise(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    scale = values.std()
    return (values - values.mean()) / (scale if scale > 1e-12 else 1.0)


def base_predictions(scores: np.ndarray, x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per known task (row of ``scores``, shape ``(tasks, m)``), its own GP's mean and std at every
    configuration ``x`` (m, d): two arrays of shape ``(tasks, m)``. A task's GP sees only its row."""
    means, stds = np.empty_like(scores), np.empty_like(scores)
    for t, row in enumerate(scores):
        gp = fit_gp(x, standardise(row), seed)
        means[t], stds[t] = gp.predict(x, return_std=True)
    return means, stds


def leave_one_out(gp, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form leave-one-out mean and std of a fitted GP at its training points (Rasmussen &
    Williams 2006, eq. (5.12)): ``mu_-i = y_i - [K^-1 y]_i / [K^-1]_ii``, ``var_-i = 1 / [K^-1]_ii``."""
    K = gp.kernel_(gp.X_train_)
    K_inv = np.linalg.inv(K + 1e-10 * np.eye(len(K)))
    diagonal = np.diag(K_inv)
    return y - (K_inv @ y) / diagonal, np.sqrt(1.0 / diagonal)


def ranking_loss(samples: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mis-ordered pairs of each sample row of ``samples`` (S, n) against ``y`` (n,) (RGPE eq. (2)); shape (S,)."""
    truth = y[:, None] < y[None, :]  # (n, n)
    predicted = samples[:, :, None] < samples[:, None, :]  # (S, n, n)
    return (predicted ^ truth[None]).sum((1, 2))


def rgpe_weights(base_mean: np.ndarray, base_std: np.ndarray, target_loo_mean: np.ndarray,
                 target_loo_std: np.ndarray, y: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Weights of the ``B`` known-task models and the new task's model (last), shape ``(B + 1,)``.

    ``base_mean``/``base_std``: (B, n) predictions at the new task's ``n`` observed points;
    ``target_loo_*``: (n,) leave-one-out predictions; ``y``: (n,) the observations.
    """
    B, n = base_mean.shape
    draws = np.concatenate([base_mean, target_loo_mean[None]])[None] + rng.standard_normal((samples, B + 1, n)) * \
        np.concatenate([base_std, target_loo_std[None]])[None]
    losses = np.stack([ranking_loss(draws[:, i], y) for i in range(B + 1)], axis=1)  # (S, B + 1)
    # weight dilution (Sec. 3.2): drop known-task models whose median loss exceeds the new model's 95th percentile
    keep = np.append(np.median(losses[:, :B], 0) <= np.percentile(losses[:, B], 95), True)
    losses = np.where(keep[None], losses, np.iinfo(losses.dtype).max)
    # argmin with random tie-breaking
    ties = losses == losses.min(1, keepdims=True)
    noise = rng.random(ties.shape)
    winners = np.argmax(np.where(ties, noise, -1.0), axis=1)
    return np.bincount(winners, minlength=B + 1) / samples


class RGPEOptimiser:
    """Proposes configurations for a new task by RGPE over the design's configurations.

    ``base_mean``/``base_std`` (tasks, m): the known tasks' surrogates at every configuration (from
    :func:`base_predictions`); with no known tasks this is cold-start GP-BO over the same design,
    whose first proposal is a seeded random configuration.
    """

    def __init__(self, x: np.ndarray, base_mean: np.ndarray, base_std: np.ndarray, samples: int = 256, seed: int = 0):
        self.x, self.base_mean, self.base_std = x, base_mean, base_std
        self.samples, self.seed = samples, seed
        self.rng = np.random.default_rng(seed)
        self.columns: list[int] = []
        self.values: list[float] = []
        self.last_weights: np.ndarray | None = None
        self.kernel = None

    def observe(self, column: int, value: float) -> None:
        self.columns.append(int(column))
        self.values.append(float(value))

    def propose(self) -> int:
        m, B = self.x.shape[0], self.base_mean.shape[0]
        if not self.columns:
            if B == 0:
                return int(self.rng.integers(m))
            return int(np.argmax(self.base_mean.mean(0)))
        if B == 0 and (len(self.columns) < 2 or np.ptp(standardise(np.array(self.values))) < 1e-12):
            remaining = np.setdiff1d(np.arange(m), self.columns)
            return int(self.rng.choice(remaining))
        return int(np.argmax(self.acquisition()))

    def acquisition(self) -> np.ndarray:
        """Expected improvement of every configuration under the weighted mixture, shape ``(m,)``
        (``-inf`` at the evaluated ones); needs at least one observation and, without known tasks, two
        distinct ones."""
        m, B = self.x.shape[0], self.base_mean.shape[0]
        y = standardise(np.array(self.values))
        if len(self.columns) < 2 or np.ptp(y) < 1e-12:
            # no ranking information yet: the known tasks' models, equally weighted
            weights = np.append(np.full(B, 1.0 / B), 0.0)
            target_mean, target_std = np.zeros(m), np.ones(m)
        else:
            gp = fit_gp(self.x[self.columns], y, self.seed, self.kernel)
            self.kernel = gp.kernel_
            target_mean, target_std = gp.predict(self.x, return_std=True)
            if B:
                loo_mean, loo_std = leave_one_out(gp, y)
                weights = rgpe_weights(self.base_mean[:, self.columns], self.base_std[:, self.columns],
                                       loo_mean, loo_std, y, self.samples, self.rng)
            else:
                weights = np.array([1.0])
        self.last_weights = weights
        means = np.concatenate([self.base_mean, target_mean[None]])
        stds = np.concatenate([self.base_std, target_std[None]])
        mean = weights @ means
        std = np.sqrt((weights**2) @ (stds**2))
        ei = expected_improvement(mean, std, float(y.max()))
        ei[self.columns] = -np.inf
        return ei
