"""Neural processes: predictive variance shrinks near the context; shapes; likelihoods; the GP family."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metalab.algorithms.model.cnp import CNP, CNPOptions
from metalab.algorithms.model.np import NeuralProcess, NPOptions
from metalab.data.gp import GaussianProcessFamily
from metalab.data.regression import RegressionTasks, Sinusoid
from metalab.data.task import Task


def small_np(latent: bool, **options):
    torch.manual_seed(0)
    if latent:
        return NeuralProcess(NPOptions(name="np", hidden=32, representation_size=32, latent_size=16, eval_samples=8,
                                       **options), (1,))
    return CNP(CNPOptions(name="cnp", hidden=32, representation_size=32), (1,))


def train(learner, tasks: RegressionTasks, steps: int, batch: int = 16, lr: float = 2e-3) -> list[float]:
    optimizer = torch.optim.Adam(learner.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        losses.append(float(learner.meta_step(tasks.batch(step * batch, batch))["loss"]))
        optimizer.step()
    return losses


@dataclass(frozen=True)
class Lines:
    """Toy family: y = a x + b, a and b uniform in [-1, 1], x uniform in [-2, 2]."""

    x_range: tuple[float, float] = (-2.0, 2.0)

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = rng.uniform(-1, 1, size=2)
        x = rng.uniform(*self.x_range, size=(count, 1))
        return x, a * x + b


def test_cnp_predictive_std_is_smaller_at_context_points_than_far_from_them():
    tasks = RegressionTasks(Lines(), "train", shots=6, queries=10, seed=0)
    learner = small_np(latent=False)
    losses = train(learner, tasks, steps=500, lr=3e-3)
    assert np.mean(losses[-50:]) < np.mean(losses[:50])
    learner.eval()
    near, far = [], []
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.uniform(-1, 1, size=2)
        context_x = torch.as_tensor(rng.uniform(-2, -1, size=(5, 1)), dtype=torch.float32)  # left end only
        targets = torch.cat([context_x, torch.tensor([[2.0]])])  # x = 2 is far from every context point
        task = Task(context_x, a * context_x + b, targets, torch.zeros_like(targets))
        _, std = learner.predictive(Task.stack([task]))
        near.append(float(std[0, :-1].mean()))
        far.append(float(std[0, -1]))
    assert np.mean(near) < 0.5 * np.mean(far)


def test_np_trains_and_reports_mixture_mean_std_and_likelihood():
    tasks = RegressionTasks(GaussianProcessFamily(), "train", shots=5, queries=10, seed=0)
    learner = small_np(latent=True, deterministic_path=True)
    losses = train(learner, tasks, steps=60, batch=8)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    batch = tasks.batch(1000, 4)
    learner.eval()
    mean, std = learner.predictive(batch)
    assert mean.shape == std.shape == (4, 10, 1) and (std > 0).all()
    torch.testing.assert_close(learner.predict(batch), mean)  # deterministic: fixed latent samples in evaluation
    assert learner.log_likelihood(batch).shape == (4,)
    prediction = learner.adapt(batch.support_x[0], batch.support_y[0])(batch.query_x[0])
    torch.testing.assert_close(prediction, mean[0], rtol=1e-5, atol=1e-5)


def test_cnp_likelihood_is_the_gaussian_log_density_of_its_prediction():
    learner = small_np(latent=False).eval()
    batch = RegressionTasks(Sinusoid(), "test", shots=5, queries=7, seed=0).batch(0, 3)
    mean, std = learner.predictive(batch)
    expected = torch.distributions.Normal(mean, std).log_prob(batch.query_y).flatten(1).mean(1)
    torch.testing.assert_close(learner.log_likelihood(batch), expected)
    assert (std >= 0.1).all()  # the std floor


def test_gp_family_samples_have_the_kernels_covariance_and_posterior_interpolates():
    family = GaussianProcessFamily(lengthscale=0.5, scale=1.0, noise=0.01)
    rng = np.random.default_rng(0)
    pairs = np.array([family.sample(rng, 2)[1][:, 0] for _ in range(4000)])
    x = np.array([[0.0], [0.3]])
    # the empirical covariance of (y(0), y(0.3)) for fixed inputs is the kernel's
    factor = np.linalg.cholesky(family.kernel(x, x) + 1e-4 * np.eye(2))
    ys = np.array([factor @ rng.standard_normal(2) for _ in range(4000)])
    np.testing.assert_allclose(np.cov(ys.T)[0, 1], np.exp(-0.5 * 0.3**2 / 0.25), atol=0.06)
    assert abs(pairs.var() - 1.0) < 0.1
    context_x, context_y = np.array([[-1.0], [0.0], [1.0]]), np.array([[0.5], [-0.2], [0.8]])
    mean, std = family.posterior(context_x, context_y, np.array([[0.0], [1.9]]))
    assert abs(mean[0, 0] + 0.2) < 0.01 and std[0, 0] < 0.05 and std[1, 0] > 0.5
