"""Plots of trained regression runs, drawn by ``metalab plot RUN`` and at the end of training.

Two figures, on the first test tasks of the run's family:

- gradient-based learners on the sinusoid: the true curve, the pre-update fit and the fits after 1
  and 10 inner steps (the MAML paper's figure 2), ``<run>/sinusoid_fits.png``;
- learners with a predictive distribution (neural processes): the predictive mean +- 2 std against
  the true function (sinusoid) or the exact GP posterior given the same context (Gaussian processes),
  ``<run>/predictive.png``.

From Python: ``plot_run(run_dir)``, or :func:`plot_sinusoid_fits` / :func:`plot_predictions` for a
learner and a :class:`~metalab.data.regression.RegressionTasks` of one's own.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metalab.algorithms.base import MetaLearner
from metalab.data.regression import RegressionTasks, regression_source
from metalab.data.task import Task

#: points of the x grid on which the fits are drawn
GRID_POINTS = 200


def x_grid(tasks: RegressionTasks) -> torch.Tensor:
    """GRID_POINTS evenly spaced inputs over the family's x range: [G, 1]."""
    low, high = tasks.family.x_range
    return torch.linspace(low, high, GRID_POINTS).unsqueeze(1)


def fits_on_grid(learner: MetaLearner, task: Task, grid: torch.Tensor, steps: int) -> torch.Tensor:
    """The learner's predictions on grid [G, 1] after ``steps`` inner steps on the task's support set: [G]."""
    batch = Task.stack([Task(task.support_x, task.support_y, grid, torch.zeros_like(grid))])
    return learner.predict(batch, steps=steps)[0, :, 0].detach()


def predictive_on_grid(learner: MetaLearner, task: Task, grid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The learner's mean and std at grid [G, 1] given the task's support set, [G] each; learners
    without ``predictive`` (e.g. MAML) get zero std."""
    batch = Task.stack([Task(task.support_x, task.support_y, grid, torch.zeros_like(grid))])
    with torch.no_grad():
        if hasattr(learner, "predictive"):
            mean, std = learner.predictive(batch)
        else:
            mean = learner.predict(batch)
            std = torch.zeros_like(mean)
    return mean[0, :, 0].numpy(), std[0, :, 0].numpy()


@contextmanager
def task_panels(learner: MetaLearner, count: int, path: str | Path, dpi: int) -> Iterator[Any]:
    """One row of ``count`` panels (matplotlib axes, yielded) with the learner in eval mode; on exit
    the figure is written to ``path`` (folders created) and the learner's mode is restored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    was_training = learner.training
    learner.eval()
    figure, axes = plt.subplots(1, count, figsize=(4 * count, 3.2), squeeze=False)
    try:
        yield axes[0]
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi)
    finally:
        plt.close(figure)
        learner.train(was_training)


def plot_sinusoid_fits(learner: MetaLearner, tasks: RegressionTasks, indices: Sequence[int], path: str | Path,
                       steps: Sequence[int] = (1, 10)) -> Path:
    """One panel per task: the true curve, the K support points, the pre-update fit (0 steps) and
    the fits after each number of ``steps`` (Finn et al. 2017, figure 2)."""
    family = tasks.family
    grid = x_grid(tasks)
    with task_panels(learner, len(indices), path, dpi=100) as axes:
        for axis, index in zip(axes, indices):
            task = tasks.task(index)
            truth = family.evaluate(tasks.function(index), grid)
            axis.plot(grid[:, 0], truth[:, 0], color="tab:red", label="ground truth")
            axis.plot(grid[:, 0], fits_on_grid(learner, task, grid, 0), ":", color="tab:green", label="pre-update")
            for count, shade in zip(steps, ("tab:blue", "navy", "black")):
                axis.plot(grid[:, 0], fits_on_grid(learner, task, grid, count), "--", color=shade,
                          label=f"{count} grad step{'s' if count > 1 else ''}")
            axis.scatter(task.support_x[:, 0], task.support_y[:, 0], marker="^", color="purple", zorder=3,
                         label=f"{tasks.shots} support points")
            axis.set_title(f"task {index}")
            axis.set_xlim(*family.x_range)
        axes[0].legend(fontsize=7, loc="lower left")
    return Path(path)


def plot_predictions(learner: MetaLearner, tasks: RegressionTasks, indices: Iterable[int], path: str | Path) -> Path:
    """One panel per task index: context points, target points, truth, predictive mean +- 2 std.

    The truth is the task's function where the family has one (sinusoid) and the exact GP posterior
    given the same context where the family is a Gaussian process.
    """
    indices = list(indices)
    family = tasks.family
    grid = x_grid(tasks)
    x = grid[:, 0].numpy()
    with task_panels(learner, len(indices), path, dpi=120) as axes:
        for axis, index in zip(axes, indices):
            task = tasks.task(index)
            mean, std = predictive_on_grid(learner, task, grid)
            if hasattr(family, "sample_function"):
                truth = family.evaluate(tasks.function(index), x)
                axis.plot(x, truth, "k--", lw=1, label="true function")
            elif hasattr(family, "posterior"):
                oracle_mean, oracle_std = family.posterior(task.support_x.double().numpy(),
                                                           task.support_y.double().numpy(), x[:, None])
                axis.plot(x, oracle_mean[:, 0], "k--", lw=1, label="exact GP posterior mean")
                axis.plot(x, oracle_mean[:, 0] + 2 * oracle_std[:, 0], "k:", lw=0.7)
                axis.plot(x, oracle_mean[:, 0] - 2 * oracle_std[:, 0], "k:", lw=0.7, label="GP +- 2 std")
            axis.plot(x, mean, "C0", lw=1.5, label="predictive mean")
            axis.fill_between(x, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.2, label="+- 2 std")
            axis.scatter(task.query_x[:, 0], task.query_y[:, 0], s=8, c="C1", alpha=0.6, label="targets")
            axis.scatter(task.support_x[:, 0], task.support_y[:, 0], s=25, c="k", marker="x", label="context")
            axis.set_title(f"test task {index} ({len(task.support_x)} context points)")
        axes[0].legend(fontsize=7, loc="best")
    return Path(path)


def plot_run(run_dir: str | Path, out: str | Path | None = None, tasks: int = 4,
             steps: Sequence[int] = (1, 10)) -> Path | None:
    """Write the test-task plot of a trained regression run (best checkpoint) and return its path.

    Gradient-based learners on the sinusoid: pre-update and post-update fits against the true curve
    (``<run>/sinusoid_fits.png``). Learners with a predictive distribution (neural processes):
    predictive mean +- 2 std (``<run>/predictive.png``). None for runs that have no such plot.
    """
    from metalab.data.sources import is_regression
    from metalab.train.build import load_run

    learner, config, _ = load_run(run_dir)
    if not is_regression(config):
        return None
    source = regression_source(config.data.dataset, config.data.test_split, shots=config.eval.shots,
                               queries=config.eval.queries, seed=config.eval.seed)
    if hasattr(learner, "predictive"):
        return plot_predictions(learner, source, range(tasks), out or Path(run_dir) / "predictive.png")
    if config.data.dataset == "sinusoid" and "steps" in inspect.signature(learner.predict).parameters:
        return plot_sinusoid_fits(learner, source, list(range(tasks)), out or Path(run_dir) / "sinusoid_fits.png", steps)
    return None
