"""Plots of trained runs, drawn by ``metalab plot RUN`` (and, for regression runs, at the end of training).

Meta-RL runs: :mod:`metalab.train.rl_plots` (trajectories before and after adaptation on 2D navigation, the
return against the stage of adaptation otherwise).

Every run: its learning curves from ``metrics.jsonl`` (training loss and accuracy, validation score with
its 95% CI band, the test score), ``<run>/curves.png``; what ``metalab plot`` draws for classification runs,
with their reliability diagram (accuracy against confidence in the evaluator's 15 bins, and how many test
queries fell in each; :func:`plot_reliability`), ``<run>/reliability.png``.

Regression runs, two figures on the first test tasks of the run's family:

- gradient-based learners on the sinusoid: the true curve, the pre-update fit and the fits after 1
  and 10 inner steps (the MAML paper's figure 2), ``<run>/sinusoid_fits.png``;
- learners with a predictive distribution (neural processes): the predictive mean +- 2 std against
  the true function (sinusoid) or the exact GP posterior given the same context (Gaussian processes),
  ``<run>/predictive.png``.

From Python: ``plot_run(run_dir)``, :func:`plot_learning_curves`, or :func:`plot_sinusoid_fits` /
:func:`plot_predictions` for a learner and a :class:`~metalab.data.regression.RegressionTasks` of one's own.
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from metalab.algorithms.base import MetaLearner
from metalab.data.regression import FunctionFamily, RegressionTasks, regression_source
from metalab.data.task import Task
from metalab.train.uncertainty import ReliabilityBins

#: points of the x grid on which the fits are drawn
GRID_POINTS = 200


def x_grid(tasks: RegressionTasks) -> torch.Tensor:
    """GRID_POINTS evenly spaced inputs over the family's x range: [G, 1]."""
    low, high = tasks.family.x_range
    return torch.linspace(low, high, GRID_POINTS).unsqueeze(1)


def fits_on_grid(learner: MetaLearner, task: Task, grid: torch.Tensor, steps: int) -> torch.Tensor:
    """The learner's predictions on grid [G, 1] after ``steps`` inner steps on the task's support set: [G]."""
    batch = Task.stack([Task(task.support_x, task.support_y, grid, torch.zeros_like(grid))])
    predict: Callable[..., torch.Tensor] = learner.predict  # one that takes steps (a gradient-based learner's)
    return predict(batch, steps=steps)[0, :, 0].detach()


def predictive_on_grid(learner: MetaLearner, task: Task, grid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The learner's mean and std at grid [G, 1] given the task's support set, [G] each; learners
    without ``predictive`` (e.g. MAML) get zero std."""
    batch = Task.stack([Task(task.support_x, task.support_y, grid, torch.zeros_like(grid))])
    predictive = getattr(learner, "predictive", None)
    with torch.no_grad():
        if predictive is not None:
            mean, std = predictive(batch)
        else:
            mean = learner.predict(batch)
            std = torch.zeros_like(mean)
    return mean[0, :, 0].numpy(), std[0, :, 0].numpy()


@contextmanager
def panels(count: int, path: str | Path, dpi: int) -> Iterator[Any]:
    """One row of ``count`` panels (matplotlib axes, yielded); on exit the figure is written to ``path``
    (folders created), in the format its suffix names (PNG without one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, count, figsize=(4 * count, 3.2), squeeze=False)
    try:
        yield axes[0]
        figure.tight_layout()
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # the format named, so that a path without a suffix is the file written (matplotlib would add .png)
            figure.savefig(path, dpi=dpi, format=path.suffix[1:] or "png")
        except OSError as error:
            raise ValueError(f"cannot write the plot to {path} ({error.strerror or error}); give a PNG file path in a "
                             f"writable folder") from None
    finally:
        plt.close(figure)


@contextmanager
def task_panels(learner: MetaLearner, count: int, path: str | Path, dpi: int) -> Iterator[Any]:
    """:func:`panels` with the learner in eval mode, its mode restored on exit."""
    was_training = learner.training
    learner.eval()
    try:
        with panels(count, path, dpi) as axes:
            yield axes
    finally:
        learner.train(was_training)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``<run>/metrics.jsonl`` (lines cut short by a crash skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run has no logged metrics yet; train it first "
                                f"(metalab train RECIPE run.dir={run_dir})")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_learning_curves(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """The learning curves of a run, from its ``metrics.jsonl``: training loss; training accuracy (where the
    learner logs one) and the validation score with its 95% CI band; the test score with its CI at its step.

    Written to ``path`` (default ``<run>/curves.png``); returns the path.
    """
    records = read_metrics(run_dir)
    train = [r for r in records if r.get("kind") == "train" and "loss" in r]
    scored = [r for r in records if r.get("kind") in ("val", "test")]
    if not train and not scored:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'} holds no training or validation records to plot")
    metric = next((m for m in ("accuracy", "return") if any(m in r for r in records)), "mse")
    with panels(2, path or Path(run_dir) / "curves.png", dpi=110) as (loss_axis, score_axis):
        loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], color="C0", label="training loss")
        loss_axis.set(xlabel="step", ylabel="loss", title="training loss")
        if metric in ("accuracy", "return"):
            trained = [r for r in train if metric in r]
            score_axis.plot([r["step"] for r in trained], [r[metric] for r in trained], color="C0", alpha=0.6,
                            label="training (meta-batch)")
        val = [r for r in records if r.get("kind") == "val" and metric in r]
        if val:
            steps = np.array([r["step"] for r in val])
            mean, ci = np.array([r[metric] for r in val]), np.array([r.get("ci95", 0.0) for r in val])
            score_axis.plot(steps, mean, "o-", color="C1", markersize=3, label="validation")
            score_axis.fill_between(steps, mean - ci, mean + ci, color="C1", alpha=0.25, label="validation 95% CI")
        for test in (r for r in records if r.get("kind") == "test" and metric in r):
            score_axis.errorbar([test["step"]], [test[metric]], yerr=[test.get("ci95", 0.0)], fmt="s", color="C3",
                                capsize=3, label="test")
        score_axis.set(xlabel="step", ylabel=metric, title=metric)
        for axis in (loss_axis, score_axis):
            if axis.has_data():
                axis.legend(fontsize=7, loc="best")
    return Path(path or Path(run_dir) / "curves.png")


def plot_reliability(bins: ReliabilityBins, path: str | Path, title: str = "") -> Path:
    """The reliability diagram (Guo et al. 2017, figure 1) of pooled predictions: left, the accuracy of each
    confidence bin against the diagonal of perfect calibration, the gap to it shaded, the ECE in the corner;
    right, the fraction of predictions in each bin. Written to ``path``; returns it."""
    count = bins.count.numpy()
    edges = np.linspace(0.0, 1.0, len(count) + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    filled = count > 0
    accuracy, confidence = bins.accuracy().numpy(), bins.mean_confidence().numpy()
    with panels(2, path, dpi=110) as (diagram, histogram):
        diagram.bar(centres[filled], accuracy[filled], width=width, color="C0", edgecolor="k", label="accuracy")
        diagram.bar(centres[filled], (confidence - accuracy)[filled], bottom=accuracy[filled], width=width,
                    color="C3", alpha=0.3, edgecolor="C3", hatch="//", label="gap to confidence")
        diagram.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        diagram.text(0.97, 0.03, f"ECE {100 * bins.ece():.2f} %", ha="right", va="bottom", transform=diagram.transAxes,
                     bbox={"facecolor": "white", "alpha": 0.8})
        diagram.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (largest predicted probability)",
                    ylabel="accuracy", title=title or "reliability diagram")
        diagram.legend(fontsize=7, loc="upper left")
        histogram.bar(centres, count / max(count.sum(), 1), width=width, color="C1", edgecolor="k")
        histogram.set(xlim=(0, 1), xlabel="confidence", ylabel="fraction of predictions",
                      title=f"{int(count.sum())} test predictions")
    return Path(path)


def run_reliability(run_dir: str | Path, data_root: str | None = None) -> ReliabilityBins:
    """The reliability bins of a classification run's test: from ``results.json`` where its test wrote them,
    else by scoring the run's checkpoint (best, else last) on its test episodes."""
    saved = Path(run_dir) / "results.json"
    if saved.is_file():
        reliability = json.loads(saved.read_text(encoding="utf-8")).get("test", {}).get("reliability")
        if reliability is not None:
            return ReliabilityBins.from_dict(reliability)
    from metalab.data.sources import evaluation_episodes
    from metalab.train.build import load_run
    from metalab.train.evaluate import episodes_per_batch, evaluate

    learner, config, _ = load_run(run_dir)
    episodes = evaluation_episodes(config, config.data.test_split, data_root=data_root)
    batch = episodes_per_batch(episodes, config.speed.eval_batch, config.speed.eval_images)
    result = evaluate(learner, episodes, batch, progress=config.train.progress)
    if result.reliability is None:
        raise ValueError(f"{run_dir} is a regression run: a reliability diagram needs class probabilities")
    return result.reliability


def plot_sinusoid_fits(learner: MetaLearner, tasks: RegressionTasks, indices: Sequence[int], path: str | Path,
                       steps: Sequence[int] = (1, 10)) -> Path:
    """One panel per task: the true curve, the K support points, the pre-update fit (0 steps) and
    the fits after each number of ``steps`` (Finn et al. 2017, figure 2)."""
    family = cast(FunctionFamily, tasks.family)  # the sinusoid's
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
                truth = cast(FunctionFamily, family).evaluate(tasks.function(index), x)
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
             steps: Sequence[int] = (1, 10), curves: bool | None = None) -> Path | None:
    """Write a run's plot and return its path.

    Classification runs (or ``curves=True``): the learning curves (:func:`plot_learning_curves`,
    ``<run>/curves.png``). Regression runs: the test-task plot of the best checkpoint. Gradient-based
    learners on the sinusoid: pre-update and post-update fits against the true curve
    (``<run>/sinusoid_fits.png``). Learners with a predictive distribution (neural processes): predictive
    mean +- 2 std (``<run>/predictive.png``). None for regression runs that have no such plot.
    """
    from metalab.data.sources import evaluation_episodes, is_environment, is_regression
    from metalab.train.build import load_run

    learner, config, _ = load_run(run_dir)
    if is_environment(config) and not curves:
        from metalab.train.rl_plots import plot_adaptation, plot_navigation

        if config.data.dataset == "navigation2d":
            first = next(evaluation_episodes(config, episodes=tasks).batches(tasks))
            return plot_navigation(learner, first, out or Path(run_dir) / "trajectories.png")
        return plot_adaptation(run_dir, out)
    if curves or (curves is None and not is_regression(config)):
        return plot_learning_curves(run_dir, out)
    if not is_regression(config):
        return None
    source = regression_source(config.data.dataset, config.data.test_split, shots=config.eval.shots,
                               queries=config.eval.queries, seed=config.eval.seed)
    if not isinstance(source, RegressionTasks):  # a mixture of families: no one truth to draw
        return None
    if hasattr(learner, "predictive"):
        return plot_predictions(learner, source, range(tasks), out or Path(run_dir) / "predictive.png")
    if config.data.dataset == "sinusoid" and "steps" in inspect.signature(learner.predict).parameters:
        return plot_sinusoid_fits(learner, source, list(range(tasks)), out or Path(run_dir) / "sinusoid_fits.png",
                                  steps)
    return None
