"""Plot a regression learner's predictive mean +- 2 std against the true function for a few tasks.

    python -m metalab.algorithms.model.np_plot RUN_DIR --out np.png [--tasks 4] [--shots K]

The truth is the task's function where the family has one (sinusoid) and the exact GP posterior
given the same context where the family is a Gaussian process; the target points are drawn too.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from metalab.data.regression import RegressionTasks
from metalab.data.task import Task

GRID_POINTS = 200


def predictive_on_grid(learner, task: Task, grid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The learner's mean and std at grid [G, 1] given the task's support set; learners without
    ``predictive`` (e.g. MAML) get zero std."""
    query = Task(task.support_x, task.support_y, grid, torch.zeros_like(grid))
    batch = Task.stack([query])
    with torch.no_grad():
        if hasattr(learner, "predictive"):
            mean, std = learner.predictive(batch)
        else:
            mean = learner.predict(batch)
            std = torch.zeros_like(mean)
    return mean[0, :, 0].numpy(), std[0, :, 0].numpy()


def plot_predictions(learner, tasks: RegressionTasks, indices: Iterable[int], path: str | Path) -> Path:
    """One panel per task index: context points, target points, truth, predictive mean +- 2 std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    indices = list(indices)
    family = tasks.family
    low, high = family.x_range
    grid = torch.linspace(low, high, GRID_POINTS).unsqueeze(-1)
    figure, axes = plt.subplots(1, len(indices), figsize=(4 * len(indices), 3.2), squeeze=False)
    learner.eval()
    for axis, index in zip(axes[0], indices):
        task = tasks.task(index)
        mean, std = predictive_on_grid(learner, task, grid)
        x = grid[:, 0].numpy()
        if hasattr(family, "sample_function"):
            truth = family.evaluate(tasks.function(index), x)
            axis.plot(x, truth, "k--", lw=1, label="true function")
        elif hasattr(family, "posterior"):
            oracle_mean, oracle_std = family.posterior(task.support_x.double().numpy(), task.support_y.double().numpy(), x[:, None])
            axis.plot(x, oracle_mean[:, 0], "k--", lw=1, label="exact GP posterior mean")
            axis.plot(x, oracle_mean[:, 0] + 2 * oracle_std[:, 0], "k:", lw=0.7)
            axis.plot(x, oracle_mean[:, 0] - 2 * oracle_std[:, 0], "k:", lw=0.7, label="GP +- 2 std")
        axis.plot(x, mean, "C0", lw=1.5, label="predictive mean")
        axis.fill_between(x, mean - 2 * std, mean + 2 * std, color="C0", alpha=0.2, label="+- 2 std")
        axis.scatter(task.query_x[:, 0], task.query_y[:, 0], s=8, c="C1", alpha=0.6, label="targets")
        axis.scatter(task.support_x[:, 0], task.support_y[:, 0], s=25, c="k", marker="x", label="context")
        axis.set_title(f"test task {index} ({len(task.support_x)} context points)")
    axes[0][0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> None:
    from metalab.data.sources import is_regression, task_source
    from metalab.train.build import load_run

    parser = argparse.ArgumentParser(description="plot a regression run's predictions on test tasks")
    parser.add_argument("run")
    parser.add_argument("--out", required=True)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--shots", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    learner, config, _ = load_run(args.run)
    if not is_regression(config):
        raise SystemExit(f"{args.run} is not a regression run (data.dataset={config.data.dataset})")
    source = task_source(config, config.data.test_split, 0, args.shots or config.eval.shots, config.eval.queries, seed=args.seed)
    print(f"wrote {plot_predictions(learner, source, range(args.tasks), args.out)}")


if __name__ == "__main__":
    main()
