"""Seeded task streams: reproducible tasks and environment randomness, splits that differ, every family."""
from __future__ import annotations

import numpy as np
import pytest

from metalab.envs.families import environment_family, environment_tasks, is_environment


@pytest.mark.parametrize("name", ["navigation2d", "bandit-5", "tabular-mdp"])
def test_the_same_seed_gives_the_same_tasks_and_environment_draws(name):
    one = environment_tasks(name, "train", shots=2, queries=2, seed=3).batch(4, 3)
    two = environment_tasks(name, "train", shots=2, queries=2, seed=3).batch(4, 3)
    assert one.tasks == two.tasks and one.seeds == two.seeds
    other = environment_tasks(name, "test", shots=2, queries=2, seed=3).batch(4, 3)
    assert other.tasks != one.tasks
    assert environment_tasks(name, "train", 2, 2, seed=4).batch(4, 3).tasks != one.tasks
    # the stream is a function of the index: task 5 is the same in a batch from 4 and in one from 5
    assert environment_tasks(name, "train", 2, 2, seed=3).batch(5, 1).tasks[0] == one.tasks[1]


def test_a_bandit_batch_resets_to_the_same_reward_draws():
    batch = environment_tasks("bandit-2", "train", 1, 1, seed=0).batch(0, 4)
    envs, _ = batch.environments(8)
    first = envs.step(np.zeros(32, dtype=np.int64))[1]
    envs, _ = batch.environments(8)
    again = envs.step(np.zeros(32, dtype=np.int64))[1]
    assert first.tolist() == again.tolist()
    envs, _ = batch.environments(8, round_=1)  # another round: other draws of the same bandits
    assert envs.step(np.zeros(32, dtype=np.int64))[1].tolist() != first.tolist()


def test_bandit_pulls_pay_with_the_arms_probabilities():
    batch = environment_tasks("bandit-3", "train", 1, 1, seed=0).batch(0, 1)
    envs, _ = batch.environments(4000)
    p = np.asarray(batch.tasks[0]["p"])
    for arm in range(3):
        rewards = envs.step(np.full(4000, arm))[1]
        assert rewards.mean() == pytest.approx(p[arm], abs=4 * np.sqrt(p[arm] * (1 - p[arm]) / 4000) + 1e-3)


def test_cheetah_rewards_follow_the_maml_authors_definitions():
    for kind, task in (("dir", {"direction": -1.0}), ("vel", {"velocity": 1.5})):
        env = environment_family(f"cheetah-{kind}").make()
        env.unwrapped.set_task(task)
        env.reset(seed=0)
        action = np.full(6, 0.5, dtype=np.float32)
        _, reward, _, _, info = env.step(action)
        velocity = info["x_velocity"]
        forward = -velocity if kind == "dir" else -abs(velocity - 1.5)
        assert reward == pytest.approx(forward - 0.05 * 6 * 0.25)


def test_names_of_families_and_bad_names():
    assert is_environment("navigation2d") and is_environment("bandit-10") and is_environment("metaworld-ml1-push")
    assert not is_environment("omniglot") and not is_environment("sinusoid")
    with pytest.raises(ValueError, match="bandit-K"):
        environment_family("bandit-many")
    with pytest.raises(ValueError, match="data.horizon must be >= 1"):
        environment_family("navigation2d", horizon=0)
    assert environment_family("cheetah-vel", horizon=7).horizon == 7
