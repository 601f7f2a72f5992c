"""2D navigation against hand-computed rewards, and the MAML paper's task distribution."""
from __future__ import annotations

import math

import numpy as np
import pytest

from metalab.envs.navigation import Navigation2D, navigation_family


def test_rewards_are_minus_the_distance_after_the_clipped_move():
    env = Navigation2D()
    env.set_task({"goal": (0.3, -0.4)})
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [0.0, 0.0]
    obs, reward, terminated, truncated, _ = env.step(np.array([0.5, 0.05]))  # x clipped to 0.1
    assert obs == pytest.approx([0.1, 0.05])
    assert reward == pytest.approx(-math.hypot(0.3 - 0.1, -0.4 - 0.05))
    assert not terminated and not truncated
    obs, reward, *_ = env.step(np.array([-0.2, -0.2]))  # both clipped to -0.1
    assert obs == pytest.approx([0.0, -0.05])
    assert reward == pytest.approx(-math.hypot(0.3, -0.35))


def test_the_episode_ends_at_the_goal_or_after_the_horizon():
    env = Navigation2D(horizon=3)
    env.set_task({"goal": (0.1, 0.1)})
    env.reset(seed=0)
    *_, terminated, truncated, _ = env.step(np.array([0.1, 0.1]))
    assert terminated and not truncated
    env.set_task({"goal": (0.5, 0.5)})
    env.reset(seed=0)
    ends = [env.step(np.zeros(2))[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]


def test_goals_are_uniform_in_the_unit_square_centred_at_zero():
    family = navigation_family()
    rng = np.random.default_rng(0)
    goals = np.array([family.sample_task(rng, "train")["goal"] for _ in range(4000)])
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.mean(0) == pytest.approx([0.0, 0.0], abs=0.02)
    assert goals.var(0) == pytest.approx([1 / 12, 1 / 12], rel=0.08)  # the variance of U[-0.5, 0.5]
    assert family.horizon == 100
