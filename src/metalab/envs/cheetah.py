"""HalfCheetah meta-RL tasks on Gymnasium's MuJoCo HalfCheetah (Finn et al. 2017, section 5.3).

The rewards are those of the MAML authors' rllab environments (``half_cheetah_env_rand_direc.py`` and
``half_cheetah_env_rand.py``), with forward velocity v = (x_after - x_before) / dt and control cost
0.05 * |a|^2:

- direction: r = d * v - 0.05 |a|^2, d = +1 (forward) or -1 (backward) with probability 1/2 each;
- velocity:  r = -|v - v_goal| - 0.05 |a|^2, v_goal uniform in [0, 2].

Episodes last 200 steps (the paper's horizon).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from metalab.envs.tasks import EnvFamily, TaskParams, limited

HORIZON = 200
#: the control cost weight of the MAML authors' environments (0.5 * 1e-1)
CTRL_COST = 0.05


class HalfCheetahTask(HalfCheetahEnv):
    """HalfCheetah whose reward is a task's: ``{"direction": +-1}`` or ``{"velocity": v_goal}``."""

    def __init__(self) -> None:
        super().__init__(ctrl_cost_weight=CTRL_COST)
        self.task: TaskParams = {"direction": 1.0}

    def set_task(self, task: TaskParams) -> None:
        self.task = task

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, Any]]:
        ctrl_cost = self.control_cost(action)
        if "direction" in self.task:
            forward = self.task["direction"] * x_velocity
        else:
            forward = -abs(x_velocity - self.task["velocity"])
        return forward - ctrl_cost, {"reward_forward": forward, "reward_ctrl": -ctrl_cost}


def sample_direction(rng: np.random.Generator, split: str) -> TaskParams:
    return {"direction": float(rng.choice((-1.0, 1.0)))}


def sample_velocity(rng: np.random.Generator, split: str) -> TaskParams:
    return {"velocity": float(rng.uniform(0.0, 2.0))}


def cheetah_family(kind: str, horizon: int | None = None) -> EnvFamily:
    steps = horizon or HORIZON
    sample = {"dir": sample_direction, "vel": sample_velocity}[kind]
    return EnvFamily(f"cheetah-{kind}", lambda: limited(HalfCheetahTask(), steps), sample, steps)
