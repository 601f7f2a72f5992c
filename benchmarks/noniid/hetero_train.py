"""Train learners from recipes on a heterogeneous task set and score them per family (not a test).

    python benchmarks/noniid/hetero_train.py RECIPE [RECIPE ...] --out FILE.json [-- key=value ...]

For each recipe: ``metalab train`` with the overrides (e.g. ``train.steps=1500 speed.engine=reference``), then the
best checkpoint on the recipe's test tasks (``eval.*``), overall and per family (the task set's side table of
groups). Writes {recipe: {"overall": ..., "families": ..., "seconds": ...}} to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from metalab.config import load_recipe
from metalab.data.sources import evaluation_episodes
from metalab.train.build import load_run
from metalab.train.evaluate import by_group, evaluate
from metalab.train.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", default="runs/noniid", help="parent folder of the run directories")
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for recipe in args.recipes:
        run_dir = Path(args.runs) / recipe
        config = load_recipe(recipe, [*overrides, f"run.dir={run_dir}", "train.progress=false"])
        start = time.perf_counter()
        Trainer(config).fit()
        seconds = time.perf_counter() - start
        learner, config, _ = load_run(run_dir)
        episodes = evaluation_episodes(config)
        result = evaluate(learner, episodes, batch_size=config.speed.eval_batch)
        results[recipe] = {"overall": result.as_dict(), "families": by_group(result, episodes.groups(), episodes.names),
                           "train_and_test_seconds": seconds, "overrides": overrides}
        print(recipe, result, json.dumps(results[recipe]["families"]), flush=True)
        out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
