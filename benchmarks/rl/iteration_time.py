"""Seconds per MAML-RL meta-iteration at a reduced size, and what the recipe's size and iterations would take
at that rate (environment steps and TRPO both grow about linearly with tasks x episodes).

    python benchmarks/rl/iteration_time.py cheetah-dir-maml-rl TASKS EPISODES [overrides...]
"""
from __future__ import annotations

import json
import sys
import time

import torch

from metalab.config import load_recipe
from metalab.data.sources import input_shape, task_source
from metalab.train.build import build_learner

if __name__ == "__main__":
    recipe, tasks, episodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    paper = load_recipe(recipe, sys.argv[4:])
    config = load_recipe(recipe, [*sys.argv[4:], f"task.meta_batch={tasks}", f"task.shots={episodes}",
                                  f"task.queries={episodes}"])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    learner = build_learner(config, input_shape(config))
    stream = task_source(config, config.data.train_split, 0, episodes, episodes, seed=0)
    seconds, returns = [], []
    for step in range(2):
        start = time.perf_counter()
        metrics = learner.meta_step(stream.batch(step * tasks, tasks))
        seconds.append(time.perf_counter() - start)
        returns.append(round(float(metrics["return"]), 2))
    per_iteration = min(seconds)
    scale = (paper.task.meta_batch * paper.task.shots) / (tasks * episodes)
    row = {"recipe": recipe, "tasks": tasks, "episodes": episodes, "horizon": stream.family.horizon,
           "seconds_per_iteration": round(per_iteration, 1),
           "post_update_return": returns, "recipe_size": [paper.task.meta_batch, paper.task.shots],
           "recipe_iterations": paper.train.steps,
           "recipe_hours_at_this_rate": round(per_iteration * scale * paper.train.steps / 3600, 1)}
    print(json.dumps(row))
