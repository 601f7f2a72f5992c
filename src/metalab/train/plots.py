"""Plots of trained runs: the sinusoid figure of the MAML paper (pre- and post-update fits).

    python -m metalab.train.plots RUN_DIR [--out fits.png] [--tasks 4] [--steps 1 10]

or from Python, after training: ``plot_run(run_dir)`` (writes ``<run_dir>/sinusoid_fits.png``).
"""
from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
from pathlib import Path

import torch

from metalab.data.regression import RegressionTasks, regression_source
from metalab.data.task import Task

GRID_POINTS = 200


def fits_on_grid(learner, task: Task, grid: torch.Tensor, steps: int) -> torch.Tensor:
    """The learner's predictions on grid [G, 1] after ``steps`` inner steps on the task's support set."""
    batch = Task.stack([Task(task.support_x, task.support_y, grid, torch.zeros_like(grid))])
    return learner.predict(batch, steps=steps)[0, :, 0].detach()


def plot_sinusoid_fits(learner, tasks: RegressionTasks, indices: Sequence[int], path: str | Path,
                       steps: Sequence[int] = (1, 10)) -> Path:
    """One panel per task: the true curve, the K support points, the pre-update fit (0 steps) and
    the fits after each number of ``steps`` (Finn et al. 2017, figure 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    family = tasks.family
    low, high = family.x_range
    grid = torch.linspace(low, high, GRID_POINTS).unsqueeze(1)
    was_training = learner.training
    learner.eval()
    figure, axes = plt.subplots(1, len(indices), figsize=(4 * len(indices), 3.2), squeeze=False)
    try:
        for axis, index in zip(axes[0], indices):
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
            axis.set_xlim(low, high)
        axes[0][0].legend(fontsize=7, loc="lower left")
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
        learner.train(was_training)
    return path


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
        from metalab.algorithms.model.np_plot import plot_predictions

        return plot_predictions(learner, source, range(tasks), out or Path(run_dir) / "predictive.png")
    if config.data.dataset == "sinusoid" and "steps" in inspect.signature(learner.predict).parameters:
        return plot_sinusoid_fits(learner, source, list(range(tasks)), out or Path(run_dir) / "sinusoid_fits.png", steps)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--out")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args(argv)
    path = plot_run(args.run, args.out, args.tasks, args.steps)
    print(path if path else f"{args.run} has no regression plot (a classification run?); nothing plotted")


if __name__ == "__main__":
    main()
