"""Measure a recipe's meta-training rate and its evaluation rate on this machine (not a test).

Usage (pin it, one thread):
    taskset -c 1 python benchmarks/metric/rates.py RECIPE [--steps 20] [--eval W:S:EPISODES ...] [key=value ...]

Builds the recipe's learner exactly as `metalab train` does (same trainer, same task stream), runs
2 warm-up steps, then times `--steps` meta-steps; then times the evaluator on the first EPISODES
fixed test episodes of each --eval setting (untrained weights: the cost does not depend on them).
Prints one JSON line per measurement with wall and process-CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from metalab.config import load_recipe
from metalab.data.sources import task_source
from metalab.train.evaluate import evaluate
from metalab.train.trainer import Trainer


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def built_trainer(recipe: str, overrides: list[str], run_dir: str, warmup_steps: int = 2) -> Trainer:
    """The recipe's trainer as `metalab train` builds it (one thread, no validation), after warm-up steps."""
    config = load_recipe(recipe, ["speed.threads=1", f"run.dir={run_dir}", "train.val_every=0", *overrides])
    trainer = Trainer(config)
    trainer.rank_offset, trainer.rank_tasks = trainer.ranks.share(config.task.meta_batch)
    trainer._build()
    for step in range(warmup_steps):
        trainer.train_step(step)
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval", action="append", default=[], help="WAYS:SHOTS:EPISODES (15 queries, batch 10)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = built_trainer(args.recipe, args.overrides, run_dir)
        config = trainer.config
        wall, cpu = clocks()
        for step in range(2, 2 + args.steps):
            loss = trainer.train_step(step)["loss"]
        wall, cpu = clocks()[0] - wall, clocks()[1] - cpu
        print(json.dumps({"recipe": args.recipe, "overrides": args.overrides, "what": "train", "steps": args.steps,
                          "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "steps_per_s": round(args.steps / wall, 3),
                          "last_loss": round(loss, 4), "threads": torch.get_num_threads(),
                          "affinity": sorted(os.sched_getaffinity(0))}), flush=True)
        for setting in args.eval:
            ways, shots, episodes = (int(v) for v in setting.split(":"))
            fixed = task_source(config, config.data.test_split, ways, shots, 15, seed=0).fixed(episodes)
            wall, cpu = clocks()
            evaluate(trainer.learner, fixed, batch_size=10)
            wall, cpu = clocks()[0] - wall, clocks()[1] - cpu
            print(json.dumps({"recipe": args.recipe, "what": f"eval {ways}w{shots}s", "episodes": episodes,
                              "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                              "episodes_per_s": round(episodes / wall, 3)}), flush=True)


if __name__ == "__main__":
    main()
