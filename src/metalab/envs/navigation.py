"""2D navigation: a point agent moves toward a goal it does not observe (Finn et al. 2017, section 5.3).

The agent starts at the origin; an action is a displacement, clipped to [-0.1, 0.1] per coordinate; the reward
of a step is minus the distance to the goal after the move; the episode ends when the agent is within 0.01 of
the goal in both coordinates, or after the horizon (100 steps). Goals are uniform in [-0.5, 0.5]^2.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metalab.envs.tasks import EnvFamily, TaskEnv, TaskParams

#: steps per episode in the MAML paper
HORIZON = 100
#: the largest displacement per coordinate and step
MAX_STEP = 0.1
#: goals are uniform in [-GOAL_RANGE, GOAL_RANGE]^2
GOAL_RANGE = 0.5


class Navigation2D(TaskEnv):
    """Observation: the position (x, y); action: a displacement (dx, dy); task: ``{"goal": (gx, gy)}``."""

    def __init__(self, horizon: int = HORIZON) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self.horizon = horizon
        self.task = {"goal": (0.0, 0.0)}
        self.position = np.zeros(2)
        self.steps = 0

    def set_task_from(self, task: TaskParams) -> None:
        self.set_task(task)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position = np.zeros(2)
        self.steps = 0
        return self.position.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.position = self.position + np.clip(action, -MAX_STEP, MAX_STEP)
        offset = self.position - np.asarray(self.task["goal"])
        reward = -float(np.sqrt((offset**2).sum()))
        self.steps += 1
        terminated = bool((np.abs(offset) < 0.01).all())
        return self.position.astype(np.float32), reward, terminated, self.steps >= self.horizon, {}


def sample_goal(rng: np.random.Generator, split: str) -> TaskParams:
    return {"goal": tuple(float(v) for v in rng.uniform(-GOAL_RANGE, GOAL_RANGE, size=2))}


def navigation_family(horizon: int | None = None) -> EnvFamily:
    steps = horizon or HORIZON
    return EnvFamily("navigation2d", lambda: Navigation2D(steps), sample_goal, steps)
