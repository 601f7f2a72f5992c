"""The evaluation protocol: a learner scored on fixed episodes, mean +- 95% confidence interval.

One evaluator for every learner: it only calls ``learner.predictive_distribution(batch)`` (classification:
accuracy of the most probable class, NLL, ECE, Brier score) and ``learner.predict(batch)`` (regression: MSE,
and NLL and interval coverage where the learner predicts a distribution), or, for a meta-RL learner on
environment tasks, ``learner.scores(batch)`` (each task's return after adaptation, and at the stages before
it); the uncertainty metrics are defined in :mod:`metalab.train.uncertainty`. How many episodes go through one
forward pass (``speed.eval_batch``, bounded by ``speed.eval_images``) changes time and memory, never a score.
"""
from __future__ import annotations

import dataclasses
import math
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Categorical

from metalab.algorithms.base import MetaLearner
from metalab.data.task import Task
from metalab.train.logging import progress_bar
from metalab.train.uncertainty import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    ReliabilityBins,
    classification_scores,
    regression_scores,
)


@dataclass
class EvalResult:
    """Per-episode scores and their summary. ``metric`` is "accuracy", "mse" or "return" (``mean``, ``ci95`` and
    ``scores`` are its); ``episode_metrics`` holds the per-episode uncertainty metrics
    (:mod:`metalab.train.uncertainty`); for meta-RL, ``stages`` holds the other per-task scores' mean and CI, e.g.
    the return after 0, 1, 2 steps."""

    metric: str
    mean: float
    ci95: float
    episodes: int
    ways: int | None
    shots: int
    queries: int
    seed: int | None
    seconds: float
    scores: list[float] = field(repr=False, default_factory=list)
    #: name -> per-episode values: nll, ece, brier (classification); nll, coverage_50, coverage_95 (regression
    #: learners with a predictive distribution; none for a point estimate)
    episode_metrics: dict[str, list[float]] = field(repr=False, default_factory=dict)
    #: the calibration bins pooled over every query of every episode (classification)
    reliability: ReliabilityBins | None = field(repr=False, default=None)

    def summary(self, name: str) -> tuple[float, float] | None:
        """Mean and 95% CI half-width of an uncertainty metric over the episodes; None where it was not scored."""
        values = self.episode_metrics.get(name)
        return mean_ci95(values) if values else None
    #: name -> [mean, ci95] of the learner's other scores (meta-RL: the stages of adaptation)
    stages: dict[str, list[float]] = field(default_factory=dict)
    #: name -> per-task values of those scores (what ``stages`` summarises; gathered across processes)
    stage_scores: dict[str, list[float]] = field(repr=False, default_factory=dict)

    def stage_means(self) -> dict[str, float]:
        """The stages' means, by name (what the logs record next to the headline)."""
        return {name: values[0] for name, values in self.stages.items()}

    @property
    def episodes_per_second(self) -> float:
        return self.episodes / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self, with_scores: bool = False) -> dict[str, Any]:
        """The summary as JSON values: the metric's ``mean``/``ci95`` (also under its name), and each uncertainty
        metric NAME as ``NAME`` and ``NAME_ci95`` (null where not scored); for classification ``ece_pooled`` and the
        ``reliability`` bins. ``with_scores``: the per-episode values too (``scores``, ``episode_metrics``)."""
        summary = asdict(self)
        summary.pop("reliability")  # a dict of tensors there: written below as lists
        summary.pop("stage_scores")
        if not with_scores:
            summary.pop("scores")
            summary.pop("episode_metrics")
        summary[self.metric] = self.mean
        uncertainty = {"accuracy": CLASSIFICATION_METRICS, "mse": REGRESSION_METRICS}.get(self.metric, ())
        for name in uncertainty:
            mean, ci95 = self.summary(name) or (None, None)
            summary[name], summary[f"{name}_ci95"] = mean, ci95
        if self.reliability is not None:
            summary["ece_pooled"] = self.reliability.ece()
            summary["reliability"] = self.reliability.as_dict()
        summary["episodes_per_second"] = self.episodes_per_second
        return summary

    def __str__(self) -> str:
        def shown(name: str, label: str, scale: float = 1.0, digits: int = 3) -> str:
            values = self.summary(name)
            if values is None:
                return ""
            return f", {label} {scale * values[0]:.{digits}f} +- {scale * values[1]:.{digits}f}"

        if self.metric == "return":
            stages = ", ".join(f"{name} {mean:.2f} +- {ci:.2f}" for name, (mean, ci) in self.stages.items())
            return (f"return {self.mean:.2f} +- {self.ci95:.2f} ({stages}; {self.episodes} tasks, {self.shots} "
                    f"episodes to adapt from, {self.queries} to score, seed {self.seed})")
        if self.metric == "accuracy":
            return (f"{self.ways}-way {self.shots}-shot accuracy {100 * self.mean:.2f} +- {100 * self.ci95:.2f} %"
                    f"{shown('nll', 'NLL')}{shown('ece', 'ECE (%)', 100, 2)}{shown('brier', 'Brier')} "
                    f"({self.episodes} episodes, seed {self.seed})")
        return (f"{self.shots}-shot MSE {self.mean:.4f} +- {self.ci95:.4f}{shown('nll', 'NLL')}"
                f"{shown('coverage_50', '50% interval coverage')}{shown('coverage_95', '95% interval coverage')} "
                f"({self.episodes} tasks, seed {self.seed})")


def mean_ci95(scores: Tensor | list[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width 1.96 * s / sqrt(n), s the sample standard deviation."""
    values = torch.as_tensor(scores, dtype=torch.float64)
    n = values.numel()
    if n == 0:
        raise ValueError("cannot summarise zero episodes")
    std = values.std(unbiased=True).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)


def episode_scores(learner: MetaLearner, predictions: Tensor, query_y: Tensor) -> Tensor:
    """One score per task: accuracy from logits [T, Q, W], or MSE from predictions [T, Q, D]."""
    if learner.task_kind == "classification":
        return (predictions.argmax(-1) == query_y).double().mean(1)
    return (predictions.double() - query_y.double()).pow(2).flatten(1).mean(1)


def score_batch(learner: MetaLearner, batch: Task) -> tuple[dict[str, Tensor], ReliabilityBins | None]:
    """Per-episode scores [T] of one batch of tasks (its primary metric under ``"score"``, the uncertainty metrics
    under their names) and, for classification, its reliability bins."""
    if learner.task_kind == "classification":
        distribution = learner.predictive_distribution(batch)
        if not isinstance(distribution, Categorical):
            raise TypeError(f"{type(learner).__name__}.predictive_distribution returned {type(distribution).__name__}: "
                            f"a classifier's must be a Categorical over the ways")
        scores = classification_scores(distribution, batch.query_y)
        scores["score"] = scores.pop("accuracy")
        return scores, ReliabilityBins.of(distribution.probs.detach(), batch.query_y)
    scores = {"score": episode_scores(learner, learner.predict(batch).detach(), batch.query_y)}
    distribution = learner.predictive_distribution(batch)
    if distribution is not None:
        scores.update(regression_scores(distribution, batch.query_y))
    return scores, None


def combine(results: list[EvalResult]) -> EvalResult:
    """One result from the results of consecutive parts of the episodes (e.g. the ranks' shares), in order."""
    scores = [s for r in results for s in r.scores]
    names = [name for name in results[0].episode_metrics if all(name in r.episode_metrics for r in results)]
    bins = [r.reliability for r in results if r.reliability is not None]
    stage_scores = {name: [s for r in results for s in r.stage_scores[name]] for name in results[0].stage_scores}
    mean, ci95 = mean_ci95(scores)
    return dataclasses.replace(
        results[0], mean=mean, ci95=ci95, episodes=len(scores), seconds=max(r.seconds for r in results),
        scores=scores, episode_metrics={n: [v for r in results for v in r.episode_metrics[n]] for n in names},
        reliability=sum(bins[1:], bins[0]) if bins else None, stage_scores=stage_scores,
        stages={name: list(mean_ci95(values)) for name, values in stage_scores.items()})


def episodes_per_batch(episodes: Any, batch_size: int, max_images: int | None = None) -> int:
    """Episodes per forward pass: ``batch_size`` (``speed.eval_batch``), fewer where their images (support and
    query, ``ways * (shots + queries)`` per episode) would pass ``max_images`` (``speed.eval_images``), at least one.

    Regression tasks count their points as images.
    """
    if max_images is None:
        return batch_size
    per_episode = (getattr(episodes, "ways", None) or 1) * (episodes.shots + episodes.queries)
    return max(1, min(batch_size, max_images // per_episode))


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MiB (``resource.getrusage``'s ``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def evaluate(
    learner: MetaLearner,
    episodes: Any,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
    max_images: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Score ``learner`` on fixed ``episodes`` (FixedEpisodes or a regression task set).

    The learner is put in eval mode for the duration (each learner decides in ``predict`` what
    eval mode means for it, e.g. transductive batch statistics for MAML) and restored afterwards.
    Episodes go through ``predict`` ``batch_size`` at a time, or fewer where that many would hold more
    than ``max_images`` images (:func:`episodes_per_batch`); the scores are the same for any batching.
    ``progress`` shows a bar of the episodes scored on a terminal (:func:`metalab.train.logging.progress_bar`).
    """
    if learner.task_kind == "reinforcement":
        return evaluate_returns(learner, episodes, batch_size, progress)
    size = episodes_per_batch(episodes, batch_size, max_images)
    was_training = learner.training
    learner.eval()
    scores: list[dict[str, Tensor]] = []
    reliability = None
    bar = progress_bar(total=len(episodes), desc="evaluating", unit="episode", enabled=progress)
    start = time.perf_counter()
    try:
        for batch in episodes.batches(size):
            batch = batch.to(device)
            batch_scores, bins = score_batch(learner, batch)
            scores.append({name: value.detach().cpu() for name, value in batch_scores.items()})
            if bins is not None:
                reliability = bins if reliability is None else reliability + bins
            bar.update(len(batch))
    finally:
        bar.close()
        learner.train(was_training)
    seconds = time.perf_counter() - start
    values = torch.cat([s["score"] for s in scores])
    mean, ci95 = mean_ci95(values)
    return EvalResult(
        metric="accuracy" if learner.task_kind == "classification" else "mse",
        mean=mean,
        ci95=ci95,
        episodes=len(values),
        ways=getattr(episodes, "ways", None) if learner.task_kind == "classification" else None,
        shots=episodes.shots,
        queries=episodes.queries,
        seed=getattr(episodes, "seed", None),
        seconds=seconds,
        scores=values.tolist(),
        episode_metrics={name: torch.cat([s[name] for s in scores]).tolist() for name in scores[0] if name != "score"},
        reliability=reliability,
    )


def by_group(result: EvalResult, groups: Tensor | list[int], names: list[str]) -> dict[str, dict[str, float]]:
    """Each group's mean +- 95% CI and episode count, from ``result``'s per-episode scores and the episodes'
    groups in the same order (a heterogeneous task set's ``fixed(count).groups()``)."""
    groups = torch.as_tensor(groups)
    scores = torch.as_tensor(result.scores, dtype=torch.float64)
    if len(groups) != len(scores):
        raise ValueError(f"{len(groups)} groups for {len(scores)} scored episodes")
    summary = {}
    for index, name in enumerate(names):
        chosen = scores[groups == index]
        if len(chosen):
            mean, ci95 = mean_ci95(chosen)
            summary[name] = {result.metric: mean, "ci95": ci95, "episodes": len(chosen)}
    return summary


def evaluate_returns(learner: MetaLearner, tasks: Any, batch_size: int = 50, progress: bool = False) -> EvalResult:
    """Score a meta-RL learner on fixed environment tasks (:class:`~metalab.envs.tasks.FixedEnvTasks`): the
    mean +- 95% CI over tasks of its ``return`` after adaptation, and of every other score it reports."""
    was_training = learner.training
    learner.eval()
    collected: dict[str, list[Tensor]] = {}
    bar = progress_bar(total=len(tasks), desc="evaluating", unit="task", enabled=progress)
    start = time.perf_counter()
    try:
        for batch in tasks.batches(batch_size):
            for name, values in learner.scores(batch).items():
                collected.setdefault(name, []).append(values.detach().double().cpu())
            bar.update(len(batch))
    finally:
        bar.close()
        learner.train(was_training)
    seconds = time.perf_counter() - start
    stages = {name: torch.cat(parts) for name, parts in collected.items()}
    headline = stages.pop("return")
    mean, ci95 = mean_ci95(headline)
    return EvalResult(metric="return", mean=mean, ci95=ci95, episodes=len(headline), ways=None, shots=tasks.shots,
                      queries=tasks.queries, seed=getattr(tasks, "seed", None), seconds=seconds,
                      scores=headline.tolist(), stages={name: list(mean_ci95(v)) for name, v in stages.items()},
                      stage_scores={name: v.tolist() for name, v in stages.items()})
