"""Peak memory and speed of an evaluation by episodes per forward pass: what ``speed.eval_images`` trades.

Each setting runs in its own process (a peak resident size is a process's): an untrained learner of a packaged
recipe scores fixed episodes of a generated data set (28x28 grey-scale, 40 classes of 20 items), and the process
reports its peak RSS (``resource.getrusage``) before and after, and episodes per second.

    python benchmarks/speed/eval_memory.py --recipe omniglot-protonet-20w1s --ways 20 --batches 20 12 5
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def measure(recipe: str, ways: int, shots: int, episodes: int, batch: int, threads: int) -> dict:
    """One process: build the recipe's learner, score ``episodes`` episodes ``batch`` at a time."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from metalab.config import load_recipe
    from metalab.data.episodes import EpisodeSampler
    from metalab.train.build import build_learner
    from metalab.train.evaluate import evaluate, peak_memory_mb
    from testdata import make_class_dataset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    learner = build_learner(load_recipe(recipe), (1, 28, 28))
    fixed = EpisodeSampler(make_class_dataset(classes=40, items=20), ways, shots, 15, seed=0).fixed(episodes)
    before = peak_memory_mb()
    result = evaluate(learner, fixed, batch)
    return {"recipe": recipe, "ways": ways, "shots": shots, "episodes_per_batch": batch,
            "images_per_batch": batch * ways * (shots + 15), "peak_mb_before": round(before),
            "peak_mb": round(peak_memory_mb()), "episodes_per_second": round(result.episodes_per_second, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="omniglot-protonet-20w1s", help="packaged recipe whose learner is scored")
    parser.add_argument("--ways", type=int, default=20, help="classes per episode")
    parser.add_argument("--shots", type=int, default=1, help="support examples per class (15 queries)")
    parser.add_argument("--episodes", type=int, default=40, help="episodes scored per setting")
    parser.add_argument("--batches", type=int, nargs="+", default=[20, 12, 5], help="episodes per forward pass")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: measure this batch
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.recipe, args.ways, args.shots, args.episodes, args.one, args.threads)))
        return
    for batch in args.batches:
        child = [sys.executable, __file__, "--recipe", args.recipe, "--ways", str(args.ways), "--shots",
                 str(args.shots), "--episodes", str(args.episodes), "--threads", str(args.threads), "--one", str(batch)]
        print(subprocess.run(child, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
