"""Score trained runs of the Bayesian learners on fixed test episodes with their predictive distributions (not a
test): accuracy or MSE, the negative log-likelihood of the predictive distribution and, for regression, the
empirical coverage of its central 50% and 95% intervals, each mean +- 95% CI over the episodes.

An interim scorer for benchmarks/bayesian/RESULTS-vi.md until the evaluator reports these metrics for every learner
(issue 30). The intervals of a Gaussian mixture: y lies in the central p interval iff its mixture CDF,
mean_s Phi((y - f_s) / sigma_y), is within [(1 - p) / 2, (1 + p) / 2].

Usage: python benchmarks/bayesian/score_vi.py RUN [RUN ...] [--episodes 200] [--set data.dataset=ambiguous ...]
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from metalab.data.sources import evaluation_episodes
from metalab.train.build import load_run


def mean_ci(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its 95% normal interval over episodes [E]."""
    return float(values.mean()), 1.96 * float(values.std()) / math.sqrt(len(values))


def score(run: str, episodes: int, overrides: list[str], batch: int = 25) -> dict[str, object]:
    learner, config, _ = load_run(run, overrides=overrides)
    learner.eval()
    torch.manual_seed(0)
    per_episode: dict[str, list[torch.Tensor]] = {}
    for tasks in evaluation_episodes(config, episodes=episodes).batches(batch):
        predictive = learner.predictive_distribution(tasks)
        values = {"nll": -predictive.log_prob(tasks.query_y).mean(1)}
        if learner.task_kind == "classification":
            values["accuracy"] = (predictive.probs.argmax(-1) == tasks.query_y).double().mean(1)
        else:
            values["mse"] = (predictive.mean - tasks.query_y).pow(2).mean((1, 2))
            components = predictive.component_distribution.base_dist  # Normal [T, Q, S, 1]
            cdf = components.cdf(tasks.query_y.unsqueeze(2)).mean(2)[..., 0]  # the mixture's CDF at y [T, Q]
            for level in (0.5, 0.95):
                inside = (cdf >= (1 - level) / 2) & (cdf <= (1 + level) / 2)
                values[f"coverage{int(level * 100)}"] = inside.double().mean(1)
        for key, value in values.items():
            per_episode.setdefault(key, []).append(value.detach().double())
    result: dict[str, object] = {"run": run, "learner": config.learner.name, "dataset": config.data.dataset,
                                 "episodes": episodes}
    for key, values in per_episode.items():
        result[key] = mean_ci(torch.cat(values))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--set", action="append", default=[], help="config override of the runs, key=value")
    args = parser.parse_args()
    for run in args.runs:
        print(json.dumps(score(run, args.episodes, args.set)))


if __name__ == "__main__":
    main()
