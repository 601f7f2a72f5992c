"""UCB1 (Auer et al. 2002) and Thompson sampling (Beta(1, 1) priors) on the fixed test bandits of a bandit recipe,
the comparisons of the RL^2 paper's Table 1; each bandit is played for ``eval.shots`` pulls, ``eval.episodes``
bandits, and the total reward is reported as mean +- 95% CI, with the expected total of always pulling the best
arm and of random pulls.

    python benchmarks/rl/bandit_baselines.py bandit-5-rl2 [overrides...]
"""
from __future__ import annotations

import json
import sys

import numpy as np

from metalab.config import load_recipe
from metalab.data.sources import evaluation_episodes
from metalab.train.evaluate import mean_ci95


def ucb1(p: np.ndarray, pulls: int, rng: np.random.Generator) -> float:
    arms = len(p)
    counts, sums, total = np.zeros(arms), np.zeros(arms), 0.0
    for t in range(pulls):
        if t < arms:
            arm = t  # each arm once
        else:
            arm = int(np.argmax(sums / counts + np.sqrt(2 * np.log(t) / counts)))
        reward = float(rng.random() < p[arm])
        counts[arm] += 1
        sums[arm] += reward
        total += reward
    return total


def thompson(p: np.ndarray, pulls: int, rng: np.random.Generator) -> float:
    wins, losses, total = np.ones(len(p)), np.ones(len(p)), 0.0
    for _ in range(pulls):
        arm = int(np.argmax(rng.beta(wins, losses)))
        reward = float(rng.random() < p[arm])
        wins[arm] += reward
        losses[arm] += 1 - reward
        total += reward
    return total


if __name__ == "__main__":
    config = load_recipe(sys.argv[1], sys.argv[2:])
    tasks = evaluation_episodes(config)
    bandits = [np.asarray(task["p"]) for batch in tasks.batches(len(tasks)) for task in batch.tasks]
    pulls = config.eval.shots
    rng = np.random.default_rng(0)
    rows = {"UCB1": [ucb1(p, pulls, rng) for p in bandits],
            "Thompson sampling": [thompson(p, pulls, rng) for p in bandits],
            "best arm (expected)": [pulls * p.max() for p in bandits],
            "random (expected)": [pulls * p.mean() for p in bandits]}
    summary = {name: mean_ci95(values) for name, values in rows.items()}
    for name, (mean, ci) in summary.items():
        print(f"{name:20s} total reward {mean:.2f} +- {ci:.2f} ({len(bandits)} bandits, {pulls} pulls)")
    print(json.dumps({name: [round(m, 3), round(c, 3)] for name, (m, c) in summary.items()}))
