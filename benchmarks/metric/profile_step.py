"""Profile a recipe's meta-steps with torch.profiler (top operators by self CPU time); not a test.

Usage: taskset -c 1 python benchmarks/metric/profile_step.py RECIPE [--steps 2] [key=value ...]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from torch.profiler import ProfilerActivity, profile

from rates import built_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = built_trainer(args.recipe, args.overrides, run_dir, warmup_steps=1)
        cpu = time.process_time()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for step in range(1, 1 + args.steps):
                trainer.train_step(step)
        print(f"{args.steps} steps: {time.process_time() - cpu:.2f} s process CPU (profiled)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
