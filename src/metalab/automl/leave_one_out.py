"""Leave-one-dataset-out evaluation of the HPO methods on the meta-dataset as a tabular benchmark.

For each task ``t``: every meta-model is built from ``meta.without(t)`` (the held-out task's results
are not in the object it receives: leakage is excluded by construction), the held-out task is seen
only through its meta-features and a black-box objective, and each method's sequence of evaluated
configurations gives a curve of normalised regret ``(best - best so far) / (best - worst)``.

The search space of every method is the design: the Optuna samplers (random, TPE, GP) propose a
point of the flat space (learner, ``u1..u4``) that is scored as the design configuration of that
learner nearest to it (a nearest-neighbour surrogate of the table; a repeated configuration costs
an evaluation again); the other methods choose among the design's configurations directly.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metalab.automl.metadataset import MetaDataset

METHODS = ("random", "tpe", "gp", "portfolio", "ranking", "knn", "rgpe", "pmf", "portfolio-pmf", "metafeature-pmf")
#: Neighbours of the kNN warm start (their best configurations are enqueued, then TPE goes on).
KNN_NEIGHBOURS = 10


class TabularObjective:
    """The held-out task as a black box: looks a configuration's score up and records the queries."""

    def __init__(self, scores: np.ndarray):
        self._scores = np.asarray(scores, dtype=float)
        self.queries: list[int] = []

    def __call__(self, index: int) -> float:
        self.queries.append(int(index))
        return float(self._scores[index])


@dataclass
class SurrogateCache:
    """Per-task GP predictions for RGPE, computed from that task's own scores only and reused across folds."""

    x: np.ndarray
    seed: int = 0
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def predictions(self, meta: MetaDataset) -> tuple[np.ndarray, np.ndarray]:
        from metalab.automl.rgpe import base_predictions

        keys = [f"{task}:{hashlib.sha1(meta.scores[t].tobytes()).hexdigest()}" for t, task in enumerate(meta.tasks)]
        for t, key in enumerate(keys):
            if key not in self.rows:
                mean, std = base_predictions(meta.scores[t : t + 1], self.x, self.seed)
                self.rows[key] = (mean[0], std[0])
        return np.stack([self.rows[k][0] for k in keys]), np.stack([self.rows[k][1] for k in keys])


def run_optuna(train: MetaDataset, objective: TabularObjective, budget: int, sampler,
               enqueue: list[int] | None = None) -> None:
    """``budget`` trials of an Optuna study with ``sampler`` on the flat space, scored by the nearest design point."""
    import optuna

    from metalab.automl.space import snap, suggest_configuration
    from metalab.automl.warmstart import enqueue_configurations

    optuna.logging.set_verbosity(logging.WARNING)
    configurations = train.configurations
    position = {c.id: i for i, c in enumerate(configurations)}
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if enqueue:
        enqueue_configurations(study, [configurations[i] for i in enqueue[:budget]])

    def score(trial) -> float:
        learner, unit = suggest_configuration(trial, train.learners())
        return objective(position[snap(learner, unit, configurations).id])

    study.optimize(score, n_trials=budget)


def run_sequence(choose: Callable[[], int], observe: Callable[[int, float], None], objective: TabularObjective,
                 budget: int, configurations: int) -> None:
    """``budget`` rounds of propose-evaluate-observe, fewer if the design runs out of configurations."""
    for _ in range(min(budget, configurations)):
        index = choose()
        observe(index, objective(index))


def run_method(method: str, train: MetaDataset, features: pd.Series, objective: TabularObjective, budget: int,
               seed: int = 0, cache: SurrogateCache | None = None) -> None:
    """Let ``method`` spend ``budget`` evaluations of ``objective``; it sees only ``train`` (the other
    tasks) and the held-out task's meta-features ``features``."""
    import optuna

    if method == "random":
        run_optuna(train, objective, budget, optuna.samplers.RandomSampler(seed=seed))
    elif method == "tpe":
        run_optuna(train, objective, budget, optuna.samplers.TPESampler(seed=seed, multivariate=True))
    elif method == "gp":
        run_optuna(train, objective, budget, optuna.samplers.GPSampler(seed=seed))
    elif method == "knn":
        from metalab.automl.warmstart import warm_start_configurations

        first = warm_start_configurations(train, features, KNN_NEIGHBOURS)
        run_optuna(train, objective, budget, optuna.samplers.TPESampler(seed=seed, multivariate=True), enqueue=first)
    elif method in ("portfolio", "ranking"):
        if method == "portfolio":
            from metalab.automl.defaults import greedy_portfolio

            order = greedy_portfolio(train, budget)
        else:
            from metalab.automl.selection import ConfigurationRanker

            order = ConfigurationRanker.fit(train, seed).ranking(features)
        for index in order[:budget]:
            objective(index)
    elif method == "pmf":
        from metalab.automl.pmf import PMFOptimiser

        pmf_optimiser = PMFOptimiser(train.scores, seed=seed)
        run_sequence(pmf_optimiser.propose, pmf_optimiser.observe, objective, budget, len(train.configurations))
    elif method == "portfolio-pmf":
        from metalab.automl.portfolio_pmf import portfolio_pmf_optimiser

        pmf_optimiser = portfolio_pmf_optimiser(train, seed=seed)
        run_sequence(pmf_optimiser.propose, pmf_optimiser.observe, objective, budget, len(train.configurations))
    elif method == "metafeature-pmf":
        from metalab.automl.metafeature_pmf import metafeature_pmf_optimiser

        pmf_optimiser = metafeature_pmf_optimiser(train, features, seed=seed)
        run_sequence(pmf_optimiser.propose, pmf_optimiser.observe, objective, budget, len(train.configurations))
    elif method in ("rgpe", "gp-design"):
        from metalab.automl.rgpe import RGPEOptimiser, encode

        x = encode(train.configurations)
        if method == "rgpe":
            cache = cache or SurrogateCache(x, seed)
            mean, std = cache.predictions(train)
        else:
            mean, std = np.zeros((0, len(x))), np.zeros((0, len(x)))
        rgpe_optimiser = RGPEOptimiser(x, mean, std, seed=seed)
        run_sequence(rgpe_optimiser.propose, rgpe_optimiser.observe, objective, budget, len(train.configurations))
    else:
        raise ValueError(f"unknown method {method!r}; the methods are {', '.join(METHODS + ('gp-design',))}")


def regret_curve(scores: np.ndarray, queries: list[int], budget: int) -> np.ndarray:
    """Normalised regret of the best configuration found after 1..budget evaluations, shape ``(budget,)``;
    a method that stopped early keeps its last value."""
    best, worst = scores.max(), scores.min()
    found = np.maximum.accumulate(scores[np.asarray(queries[:budget], dtype=int)])
    found = np.concatenate([found, np.full(budget - len(found), found[-1])])
    return (best - found) / max(best - worst, 1e-12)


def evaluate_task(meta: MetaDataset, task: str, methods: list[str], budget: int, seed: int = 0,
                  cache: SurrogateCache | None = None) -> list[dict]:
    """All ``methods`` on held-out ``task``: rows ``{method, task, seed, curve}``."""
    train = meta.without(task)  # the held-out task's results are absent from everything below
    features = meta.metafeatures.loc[task]
    scores = meta.scores[meta.index(task)]
    rows = []
    for method in methods:
        objective = TabularObjective(scores)
        run_method(method, train, features, objective, budget, seed, cache)
        rows.append({"method": method, "task": task, "seed": seed,
                     "curve": regret_curve(scores, objective.queries, budget).tolist(),
                     "queries": objective.queries})
    return rows


def summarise(rows: pd.DataFrame, at: tuple[int, ...] = (1, 5, 10, 20, 50)) -> pd.DataFrame:
    """Mean normalised regret and its 95% confidence half-width (Student t over tasks) after each
    number of evaluations in ``at``: one row per method. Seeds are averaged within a task first."""
    from scipy import stats

    out = []
    for method, group in rows.groupby("method", sort=False):
        curves = np.stack(group.groupby("task")["curve"].apply(lambda c: np.mean(np.stack(c.to_list()), 0)).to_list())
        row: dict[str, object] = {"method": method, "tasks": len(curves)}
        for n in at:
            if n > curves.shape[1]:
                continue
            values = curves[:, n - 1]
            half = (stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
                    if len(values) > 1 else np.nan)
            row[f"regret@{n}"] = float(values.mean())
            row[f"ci@{n}"] = float(half)
        out.append(row)
    return pd.DataFrame(out)


def mean_curves(rows: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per method, the mean regret curve over tasks and its 95% CI half-width, each shape ``(budget,)``."""
    from scipy import stats

    result = {}
    for method, group in rows.groupby("method", sort=False):
        curves = np.stack(group.groupby("task")["curve"].apply(lambda c: np.mean(np.stack(c.to_list()), 0)).to_list())
        n = len(curves)
        half = stats.t.ppf(0.975, n - 1) * curves.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(curves.shape[1])
        result[str(method)] = (curves.mean(0), half)
    return result


def evaluations_to_match(curves: dict[str, tuple[np.ndarray, np.ndarray]], reference: str = "tpe",
                         at: int = 50) -> dict[str, int | None]:
    """Per method, the fewest evaluations whose mean regret is at most ``reference``'s at ``at``
    evaluations (``None`` if never within the budget): the issue's target compares this with 10."""
    target = curves[reference][0][at - 1]
    return {m: (int(np.argmax(c <= target + 1e-12)) + 1 if (c <= target + 1e-12).any() else None)
            for m, (c, _) in curves.items()}


def plot_regret(curves: dict[str, tuple[np.ndarray, np.ndarray]], path, title: str = "") -> None:
    """Mean normalised regret (log scale) vs evaluations, with 95% CI bands, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metalab.utils.io import atomic_write

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for method, (mean, half) in curves.items():
        steps = np.arange(1, len(mean) + 1)
        axis.plot(steps, mean, label=method)
        axis.fill_between(steps, np.maximum(mean - half, 1e-4), mean + half, alpha=0.15)
    axis.set_yscale("log")
    axis.set_xlabel("evaluations")
    axis.set_ylabel("normalised regret (mean, 95% CI over tasks)")
    axis.set_title(title)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)
