"""UCB1 (Auer et al. 2002) and Thompson sampling (Beta(1, 1) priors) on the fixed test bandits of a bandit recipe,
the comparisons of the RL^2 paper's Table 1; each bandit is played for ``eval.shots`` pulls, ``eval.episodes``
bandits, and the total reward is reported as mean +- 95% CI, with the expected total of always pulling the best
arm and of random pulls. UCB1 is reported twice: with its textbook bonus sqrt(2 ln t / n_i), and with that bonus
scaled by the c in ``UCB_SCALES`` that does best on as many validation bandits (the recipe's val split: the test
bandits never choose it), since a short horizon favours far less exploration than the textbook bonus gives.

    python benchmarks/rl/bandit_baselines.py bandit-5-rl2 [overrides...]
"""
from __future__ import annotations

import json
import sys

import numpy as np

from metalab.config import load_recipe
from metalab.data.sources import evaluation_episodes
from metalab.train.evaluate import mean_ci95

#: exploration scales tried for the tuned UCB1 (1: the textbook bonus)
UCB_SCALES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def ucb1(p: np.ndarray, pulls: int, rng: np.random.Generator, scale: float = 1.0) -> float:
    """Total reward of UCB1 on arm probabilities ``p``: each arm once, then the arm maximising
    mean + scale * sqrt(2 ln t / n_i) (scale 0: greedy after one pull of each arm)."""
    arms = len(p)
    counts, sums, total = np.zeros(arms), np.zeros(arms), 0.0
    for t in range(pulls):
        if t < arms:
            arm = t  # each arm once
        else:
            arm = int(np.argmax(sums / counts + scale * np.sqrt(2 * np.log(t) / counts)))
        reward = float(rng.random() < p[arm])
        counts[arm] += 1
        sums[arm] += reward
        total += reward
    return total


def tuned_scale(bandits: list[np.ndarray], pulls: int) -> float:
    """The UCB scale with the highest mean total reward on ``bandits`` (validation bandits; ties: the smaller)."""
    rng = np.random.default_rng(1)
    means = {c: np.mean([ucb1(p, pulls, rng, c) for p in bandits]) for c in UCB_SCALES}
    return max(means, key=lambda c: means[c])


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
    test = evaluation_episodes(config)
    val = evaluation_episodes(config, config.data.val_split, episodes=config.eval.val_episodes or 200)
    bandits, validation = ([np.asarray(task["p"]) for batch in tasks.batches(len(tasks)) for task in batch.tasks]
                           for tasks in (test, val))
    pulls = config.eval.shots
    scale = tuned_scale(validation, pulls)
    rows = {"UCB1": [ucb1(p, pulls, rng) for rng in [np.random.default_rng(0)] for p in bandits],
            f"UCB1, c = {scale} (tuned)": [ucb1(p, pulls, rng, scale) for rng in [np.random.default_rng(0)]
                                           for p in bandits],
            "Thompson sampling": [thompson(p, pulls, rng) for rng in [np.random.default_rng(0)] for p in bandits],
            "best arm (expected)": [pulls * p.max() for p in bandits],
            "random (expected)": [pulls * p.mean() for p in bandits]}
    summary = {name: mean_ci95(values) for name, values in rows.items()}
    for name, (mean, ci) in summary.items():
        print(f"{name:24s} total reward {mean:.2f} +- {ci:.2f} ({len(bandits)} bandits, {pulls} pulls)")
    print(json.dumps({name: [round(m, 3), round(c, 3)] for name, (m, c) in summary.items()}))
