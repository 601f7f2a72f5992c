"""Warm-started vs cold DARTS: the one-shot network's validation accuracy against search steps, and the saving.

One source search on digit classes SOURCE; then, on each target class subset, a cold search and warm-started
ones (alpha only; alpha and weights) with the same seed and steps. The saving of a warm start on a target is

    steps_cold(target accuracy) / steps_warm(target accuracy),   target accuracy = the cold search's final one,

the recorded steps at which each search first reaches the accuracy the cold search ends with (a warm search
that reaches it at step 0 counts as one evaluation interval, so the ratio stays finite). Prints a table and
writes ``<out>/warm_start.json`` with every history.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/nas/warm_start.py --out runs/nas-warm
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from metalab.nas.search import load_config, run_search, steps_to_reach

SPACE = ["space.cells=2", "space.channels=8", "space.nodes=3", "space.reductions=[1]", "search.batch=32",
         "retrain.steps=0", "threads=1"]
TARGETS = ["[5,6,7,8,9]", "[0,2,4,6,8]", "[1,3,5,7,9]", "[0,1,7,8,9]", "[2,3,4,5,6]"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/nas-warm")
    parser.add_argument("--source", default="[0,1,2,3,4]")
    parser.add_argument("--source-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--targets", type=int, default=len(TARGETS))
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    source = out / "source"
    run_search(load_config("digits-darts", [*SPACE, f"task.classes={args.source}", f"search.steps={args.source_steps}",
                                            f"search.eval_every={args.eval_every}", f"run_dir={source}"]))
    rows = []
    for classes in TARGETS[: args.targets]:
        common = [*SPACE, f"task.classes={classes}", f"search.steps={args.steps}",
                  f"search.eval_every={args.eval_every}"]
        histories = {}
        for label, warm, extra in (("cold", None, []), ("alpha", source, []),
                                   ("alpha+weights", source, ["search.warm_start_weights=true"])):
            run = out / f"{classes.strip('[]').replace(',', '')}-{label}"
            run_search(load_config("digits-darts", [*common, *extra, f"run_dir={run}"]), warm_start_run=warm)
            histories[label] = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        target = histories["cold"][-1]["val_accuracy"]
        cold_steps = steps_to_reach(histories["cold"], target)
        row = {"classes": classes, "target_accuracy": target, "cold_steps": cold_steps,
               "curves": {k: [(e["step"], e["val_accuracy"]) for e in h] for k, h in histories.items()}}
        for label in ("alpha", "alpha+weights"):
            reached = steps_to_reach(histories[label], target)
            row[f"{label}_steps"] = reached
            row[f"{label}_saving"] = (cold_steps / max(reached, args.eval_every)) if reached is not None else None
            row[f"{label}_final"] = histories[label][-1]["val_accuracy"]
        rows.append(row)
        print(f"{classes}: cold reaches {target:.3f} at step {cold_steps}; alpha-only warm at "
              f"{row['alpha_steps']} (x{row['alpha_saving']}), alpha+weights warm at {row['alpha+weights_steps']} "
              f"(x{row['alpha+weights_saving']})", flush=True)
    summary = {"source": args.source, "source_steps": args.source_steps, "steps": args.steps, "rows": rows,
               "seconds": round(time.perf_counter() - started, 1)}
    for label in ("alpha", "alpha+weights"):
        savings = [r[f"{label}_saving"] for r in rows if r[f"{label}_saving"] is not None]
        summary[f"{label}_mean_saving"] = statistics.mean(savings) if savings else None
        summary[f"{label}_reached"] = f"{len(savings)}/{len(rows)}"
        # mean validation accuracy over the targets at each recorded step
        summary[f"{label}_mean_curve"] = [
            (step, statistics.mean(r["curves"][label][i][1] for r in rows))
            for i, (step, _) in enumerate(rows[0]["curves"][label])]
    summary["cold_mean_curve"] = [(step, statistics.mean(r["curves"]["cold"][i][1] for r in rows))
                                  for i, (step, _) in enumerate(rows[0]["curves"]["cold"])]
    (out / "warm_start.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))


if __name__ == "__main__":
    main()
