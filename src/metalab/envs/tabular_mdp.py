"""Random tabular MDPs (Duan et al. 2016, section 4.2): 10 states, 5 actions, episodes of 10 steps.

A task is an MDP: transition probabilities p(s'|s, a) from a flat Dirichlet distribution, and mean rewards
R(s, a) ~ N(1, 1); a step's reward is drawn from N(R(s, a), 1). Episodes start in state 0. The observation is
the state, one-hot.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metalab.envs.tasks import EnvFamily, TaskEnv, TaskParams, limited

STATES, ACTIONS, HORIZON = 10, 5, 10


class TabularMDP(TaskEnv):
    """task: ``{"transitions": [S][A][S], "rewards": [S][A]}`` (nested lists, so that tasks stay plain data)."""

    def __init__(self, states: int = STATES, actions: int = ACTIONS) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(states,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(actions)
        self.states = states
        self.set_task({"transitions": np.full((states, actions, states), 1.0 / states).tolist(),
                       "rewards": np.zeros((states, actions)).tolist()})

    def set_task(self, task: TaskParams) -> None:
        super().set_task(task)
        self._transitions = np.asarray(task["transitions"])
        self._rewards = np.asarray(task["rewards"])

    def _observation(self) -> np.ndarray:
        return np.eye(self.states, dtype=np.float32)[self.state]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = 0
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = int(action)
        reward = float(self.np_random.normal(self._rewards[self.state, action], 1.0))
        self.state = int(self.np_random.choice(self.states, p=self._transitions[self.state, action]))
        return self._observation(), reward, False, False, {}


def sample_mdp(rng: np.random.Generator, split: str) -> TaskParams:
    return {"transitions": rng.dirichlet(np.ones(STATES), size=(STATES, ACTIONS)).tolist(),
            "rewards": rng.normal(1.0, 1.0, size=(STATES, ACTIONS)).tolist()}


def tabular_mdp_family(horizon: int | None = None) -> EnvFamily:
    steps = horizon or HORIZON
    return EnvFamily("tabular-mdp", lambda: limited(TabularMDP(), steps), sample_mdp, steps)
