"""Rollout throughput on 2D navigation: environment steps per second, one environment at a time against
``gymnasium.vector.SyncVectorEnv`` batches, with metalab's rollout collector and MAML-RL's policy (100-100).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/rl/throughput.py
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from metalab.algorithms.rl.components.policies import MLPPolicy
from metalab.algorithms.rl.components.rollouts import collect
from metalab.envs.families import environment_tasks
from metalab.envs.navigation import Navigation2D


def raw_single_env(steps: int) -> float:
    """A bare Gymnasium loop with random actions: the environment's own cost."""
    env = Navigation2D()
    env.set_task({"goal": (0.3, 0.2)})
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-0.1, 0.1, size=(steps, 2))
    start = time.perf_counter()
    for action in actions:
        *_, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def collector(tasks: int, copies: int, repeats: int) -> float:
    """metalab's collect(): T tasks x copies environments in one SyncVectorEnv, the MLP policy acting on all."""
    stream = environment_tasks("navigation2d", "train", copies, copies, seed=0)
    policy = MLPPolicy(2, stream.family.spaces[1], (100, 100))
    batch = stream.batch(0, tasks)
    collect(batch, copies, policy.distribution, round_=0)  # builds the vector environment once
    steps, start = 0, time.perf_counter()
    for r in range(repeats):
        steps += collect(batch, copies, policy.distribution, round_=r + 1).steps()
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    torch.set_num_threads(1)
    rows = {"raw Navigation2D.step, 1 env": raw_single_env(20000),
            "collect(), 1 task x 1 env": collector(1, 1, 20),
            "collect(), 1 task x 20 envs": collector(1, 20, 5),
            "collect(), 20 tasks x 20 envs (MAML-RL's meta-batch)": collector(20, 20, 2)}
    for name, value in rows.items():
        print(f"{name:55s} {value:10.0f} env steps/s")
    print(json.dumps({name: round(value) for name, value in rows.items()}))
