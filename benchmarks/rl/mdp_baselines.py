"""Baselines for RL^2 on random tabular MDPs (Duan et al. 2016, section 4.2), on the fixed test MDPs of a recipe:
the total reward of a trial of ``eval.shots`` episodes (of the family's horizon, from state 0) for

- a uniformly random policy (its exact expectation on the true MDP, by dynamic programming),
- posterior sampling (PSRL, Osband et al. 2013): each episode samples an MDP from
  the posterior (Dirichlet(1) transitions, N(1, 1) prior on mean rewards with unit reward noise, the generating
  distribution), plays its finite-horizon optimal policy on the true MDP and updates the counts,
- the optimal policy of the true MDP (value iteration knowing the MDP): an upper bound no learner reaches,

as mean +- 95% CI over the MDPs.

    python benchmarks/rl/mdp_baselines.py tabular-mdp-rl2 [overrides...]
"""
from __future__ import annotations

import json
import sys

import numpy as np

from metalab.config import load_recipe
from metalab.data.sources import evaluation_episodes
from metalab.train.evaluate import mean_ci95


def finite_horizon_values(transitions: np.ndarray, rewards: np.ndarray, horizon: int,
                          policy: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Backward induction. transitions: [S, A, S]; rewards: [S, A] (means); policy: [S, A] action probabilities,
    or None for the optimal policy. Returns (values [S] at the first step, greedy actions [horizon, S])."""
    values = np.zeros(transitions.shape[0])
    actions = np.zeros((horizon, transitions.shape[0]), dtype=int)
    for t in reversed(range(horizon)):
        q = rewards + transitions @ values  # [S, A]
        actions[t] = q.argmax(axis=1)
        values = q.max(axis=1) if policy is None else (policy * q).sum(axis=1)
    return values, actions


def psrl(transitions: np.ndarray, rewards: np.ndarray, horizon: int, episodes: int,
         rng: np.random.Generator) -> float:
    """Total reward of PSRL over ``episodes`` episodes on the true MDP (rewards ~ N(R(s, a), 1))."""
    states, n_actions = rewards.shape
    counts = np.ones((states, n_actions, states))  # Dirichlet(1) prior
    reward_sum, visits = np.zeros((states, n_actions)), np.zeros((states, n_actions))
    total = 0.0
    for _ in range(episodes):
        sampled_p = np.stack([[rng.dirichlet(counts[s, a]) for a in range(n_actions)] for s in range(states)])
        precision = 1.0 + visits  # prior N(1, 1), unit-variance reward noise
        sampled_r = rng.normal((1.0 + reward_sum) / precision, 1.0 / np.sqrt(precision))
        _, plan = finite_horizon_values(sampled_p, sampled_r, horizon)
        state = 0
        for t in range(horizon):
            action = plan[t, state]
            reward = rng.normal(rewards[state, action], 1.0)
            following = int(rng.choice(states, p=transitions[state, action]))
            counts[state, action, following] += 1
            reward_sum[state, action] += reward
            visits[state, action] += 1
            total += reward
            state = following
    return total


if __name__ == "__main__":
    config = load_recipe(sys.argv[1], sys.argv[2:])
    tasks = evaluation_episodes(config)
    horizon = tasks.stream.family.horizon
    episodes = config.eval.shots
    mdps = [(np.asarray(task["transitions"]), np.asarray(task["rewards"]))
            for batch in tasks.batches(len(tasks)) for task in batch.tasks]
    rng = np.random.default_rng(0)
    rows = {
        "random (expected)": [episodes * finite_horizon_values(p, r, horizon, np.full(r.shape, 1 / r.shape[1]))[0][0]
                              for p, r in mdps],
        "PSRL": [psrl(p, r, horizon, episodes, rng) for p, r in mdps],
        "optimal on the true MDP (expected)": [episodes * finite_horizon_values(p, r, horizon)[0][0] for p, r in mdps],
    }
    summary = {name: mean_ci95(values) for name, values in rows.items()}
    for name, (mean, ci) in summary.items():
        print(f"{name:36s} total reward {mean:.2f} +- {ci:.2f} ({len(mdps)} MDPs, {episodes} episodes of {horizon})")
    print(json.dumps({name: [round(m, 3), round(c, 3)] for name, (m, c) in summary.items()}))
