"""1-D Gaussian-process regression tasks (the neural-process benchmark of Garnelo et al. 2018).

Each task is a function drawn from a zero-mean GP with an RBF kernel,
k(x, x') = scale^2 exp(-(x - x')^2 / (2 lengthscale^2)), observed at inputs uniform in x_range
with Gaussian noise. The exact GP posterior is available as the oracle a learner is compared with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GaussianProcessFamily:
    lengthscale: float = 0.4
    scale: float = 1.0
    noise: float = 0.02
    x_range: tuple[float, float] = (-2.0, 2.0)

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """RBF covariances between inputs a [n, 1] and b [m, 1] -> [n, m]."""
        return self.scale**2 * np.exp(-0.5 * (a - b.T) ** 2 / self.lengthscale**2)

    def sample_inputs(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.uniform(*self.x_range, size=(count, 1))

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """One task: a function drawn from the GP at ``count`` random inputs, plus noise; x, y [count, 1]."""
        x = self.sample_inputs(rng, count)
        covariance = self.kernel(x, x) + self.noise**2 * np.eye(count)
        cholesky = np.linalg.cholesky(covariance + 1e-9 * np.eye(count))
        return x, cholesky @ rng.standard_normal((count, 1))

    def posterior(self, context_x: np.ndarray, context_y: np.ndarray,
                  target_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact predictive mean and standard deviation (noise included) at target_x [m, 1] -> [m, 1] each."""
        covariance = self.kernel(context_x, context_x) + self.noise**2 * np.eye(len(context_x))
        cross = self.kernel(target_x, context_x)
        cholesky = np.linalg.cholesky(covariance)
        alpha = np.linalg.solve(cholesky.T, np.linalg.solve(cholesky, context_y))
        v = np.linalg.solve(cholesky, cross.T)
        variance = self.scale**2 + self.noise**2 - (v**2).sum(0)
        return cross @ alpha, np.sqrt(np.maximum(variance, 1e-12))[:, None]
