"""A reference for 2D navigation: the return of an agent that never moves, on a recipe's fixed test tasks, scored
as ``metalab eval`` scores a run (mean +- 95% CI over tasks). A learner that has not learnt to move toward the
goal scores about this.

    python benchmarks/rl/stay_at_origin.py navigation2d-pearl [overrides...]
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from metalab.config import load_recipe
from metalab.data.sources import evaluation_episodes
from metalab.train.evaluate import mean_ci95

if __name__ == "__main__":
    config = load_recipe(sys.argv[1], sys.argv[2:])
    returns = []
    for batch in evaluation_episodes(config).batches(config.speed.eval_batch):
        envs, _ = batch.environments(1)
        total, alive = np.zeros(len(batch)), np.ones(len(batch))
        for _ in range(batch.family.horizon):
            _, reward, terminated, truncated, _ = envs.step(np.zeros((len(batch), 2), dtype=np.float32))
            total += reward * alive
            alive *= 1 - (terminated | truncated)
        returns.extend(total.tolist())
    mean, ci95 = mean_ci95(torch.tensor(returns))
    print(f"stay at the origin: return {mean:.2f} +- {ci95:.2f} on {len(returns)} test tasks")
