"""Meta-World ML1 (Yu et al. 2019): one manipulation skill (reach, push, ...) whose object and goal positions
vary between tasks, from the ``metaworld`` package.

ML1's 50 train tasks and 50 test tasks are fixed sets of positions: the ``train`` split draws from the
former, every other split from the latter. Episodes last 150 steps (the Meta-World paper's path length for
its meta-RL results; the package's own limit is 500).
"""
from __future__ import annotations

from functools import cache
from typing import Any

import gymnasium as gym
import numpy as np

from metalab.envs.tasks import EnvFamily, TaskParams, limited

HORIZON = 150


@cache
def benchmark(skill: str) -> Any:
    """Meta-World's ML1 benchmark of ``skill`` (e.g. ``reach-v3``); its tasks are fixed by its seed."""
    import metaworld

    if skill not in metaworld.ML1.ENV_NAMES:
        raise ValueError(f"unknown Meta-World skill {skill!r} (data.dataset=metaworld-ml1-SKILL); known: "
                         f"{', '.join(name.removesuffix('-v3') for name in metaworld.ML1.ENV_NAMES)}")
    return metaworld.ML1(skill, seed=0)


class MetaWorldTask(gym.Wrapper):
    """A Meta-World environment whose task is ``{"index": i, "split": "train" | "test"}`` into ML1's tasks."""

    def __init__(self, skill: str) -> None:
        ml1 = benchmark(skill)
        super().__init__(ml1.train_classes[skill]())
        self.skill = skill
        self.set_task({"index": 0, "split": "train"})

    def set_task(self, task: TaskParams) -> None:
        ml1 = benchmark(self.skill)
        tasks = ml1.train_tasks if task["split"] == "train" else ml1.test_tasks
        self.env.unwrapped.set_task(tasks[task["index"]])  # type: ignore[attr-defined]


def metaworld_family(skill: str, horizon: int | None = None) -> EnvFamily:
    name = skill if skill.endswith("-v3") else f"{skill}-v3"
    steps = horizon or HORIZON

    def sample(rng: np.random.Generator, split: str) -> TaskParams:
        chosen = "train" if split == "train" else "test"
        ml1 = benchmark(name)
        count = len(ml1.train_tasks if chosen == "train" else ml1.test_tasks)
        return {"index": int(rng.integers(count)), "split": chosen}

    return EnvFamily(f"metaworld-ml1-{skill}", lambda: limited(MetaWorldTask(name), steps), sample, steps)
