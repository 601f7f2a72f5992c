"""Bernoulli multi-armed bandits (Duan et al. 2016, section 4.1): each arm pays 1 with its own probability.

An episode is one pull (the observation is a constant); a trial of ``n`` episodes on one bandit is what RL^2's
recurrent policy learns within. Arm probabilities are drawn uniformly from [0, 1].
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metalab.envs.tasks import EnvFamily, TaskEnv, TaskParams


class BernoulliBandit(TaskEnv):
    """Observation: [0.] (nothing to see); action: the arm; reward: 1 with probability ``task["p"][arm]``."""

    def __init__(self, arms: int) -> None:
        self.observation_space = gym.spaces.Box(0.0, 0.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(arms)
        self.task = {"p": [0.5] * arms}

    def set_task_from(self, task: TaskParams) -> None:
        self.set_task(task)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(self.np_random.random() < self.task["p"][int(action)])
        return np.zeros(1, dtype=np.float32), reward, True, False, {}


def bandit_family(arms: int) -> EnvFamily:
    if arms < 2:
        raise ValueError(f"a bandit needs at least 2 arms, got {arms} (data.dataset=bandit-K, K >= 2)")

    def sample(rng: np.random.Generator, split: str) -> TaskParams:
        return {"p": [float(p) for p in rng.uniform(0.0, 1.0, size=arms)]}

    return EnvFamily(f"bandit-{arms}", lambda: BernoulliBandit(arms), sample, horizon=1)
