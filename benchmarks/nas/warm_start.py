"""Warm-started vs cold DARTS: the one-shot network's validation accuracy against search steps, and the saving.

For each seed, one source search on digit classes SOURCE; then, on each target class subset, a cold search and
warm-started ones (``--arms``: alpha only; alpha and weights) with the same seed and steps. The saving of a warm
start on a (target, seed) pair is

    steps_cold(target accuracy) / steps_warm(target accuracy),   target accuracy = the cold search's final one,

the recorded steps at which each search first reaches the accuracy the cold search ends with (a warm search
that reaches it at step 0 counts as one evaluation interval, so the ratio stays finite; so does a cold one).
The saving is computed twice: on the validation accuracy in evaluation mode
(BatchNorm's running statistics, DARTS's own measure) and on the accuracy with BatchNorm on the validation
set's statistics (``search.eval_batch_stats``), which does not carry the lag of the running statistics that a
cold network has and a weight-warm-started one does not. Mean +- 95 % CI (normal approximation over the
pairs). Prints each pair and writes ``<out>/warm_start.json``; ``--summarize`` rebuilds it from the complete
pairs of an interrupted run.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/nas/warm_start.py --out runs/nas-warm
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from metalab.nas.search import load_config, run_search, steps_to_reach

SPACE = ["space.cells=2", "space.channels=8", "space.nodes=3", "space.reductions=[1]", "search.batch=32",
         "retrain.steps=0", "threads=1", "search.eval_batch_stats=true"]
TARGETS = ["[5,6,7,8,9]", "[0,2,4,6,8]", "[1,3,5,7,9]", "[0,1,7,8,9]", "[2,3,4,5,6]"]
ARMS = {"alpha": [], "alpha+weights": ["search.warm_start_weights=true"]}
MEASURES = ("val_accuracy", "val_accuracy_batch_stats")


def mean_ci(values: list[float]) -> tuple[float, float] | None:
    """Mean and the half-width of its 95 % interval (1.96 standard errors; 0 for one value)."""
    if not values:
        return None
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.mean(values), half


def saving(histories: dict[str, list[dict[str, Any]]], arm: str, key: str, every: int,
           threshold: float | None = None) -> dict[str, Any]:
    """Steps of the cold and the warm search to the cold search's final ``key`` accuracy (or to ``threshold``),
    and their ratio."""
    cold = [{"step": e["step"], "val_accuracy": e[key]} for e in histories["cold"]]
    warm = [{"step": e["step"], "val_accuracy": e[key]} for e in histories[arm]]
    target = cold[-1]["val_accuracy"] if threshold is None else threshold
    cold_steps, warm_steps = steps_to_reach(cold, target), steps_to_reach(warm, target)
    ratio = (max(cold_steps, every) / max(warm_steps, every)
             if warm_steps is not None and cold_steps is not None else None)
    return {"target": target, "cold_steps": cold_steps, "warm_steps": warm_steps, "saving": ratio,
            "warm_final": warm[-1]["val_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/nas-warm")
    parser.add_argument("--source", default="[0,1,2,3,4]")
    parser.add_argument("--source-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--targets", type=int, default=len(TARGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.9],
                        help="also the saving to these fixed accuracies (pairs whose cold search never reaches one "
                             "are left out of its mean)")
    parser.add_argument("--summarize", action="store_true",
                        help="run nothing: summarize the (target, seed) pairs whose searches in --out are complete")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    rows = []
    for seed in args.seeds:
        source = out / f"source-s{seed}"
        if not args.summarize:
            run_search(load_config("digits-darts", [*SPACE, f"task.classes={args.source}", f"seed={seed}",
                                                    f"search.steps={args.source_steps}",
                                                    f"search.eval_every={args.eval_every}", f"run_dir={source}"]))
        for classes in TARGETS[: args.targets]:
            common = [*SPACE, f"task.classes={classes}", f"search.steps={args.steps}", f"seed={seed}",
                      f"search.eval_every={args.eval_every}"]
            histories = {}
            for label in ("cold", *args.arms):
                run = out / f"{classes.strip('[]').replace(',', '')}-s{seed}-{label}"
                if not args.summarize:
                    run_search(load_config("digits-darts", [*common, *ARMS.get(label, []), f"run_dir={run}"]),
                               warm_start_run=None if label == "cold" else source)
                if (run / "result.json").is_file():  # written when the search is complete
                    histories[label] = [json.loads(line)
                                        for line in (run / "history.jsonl").read_text().splitlines()]
            if len(histories) < 1 + len(args.arms):
                continue
            row: dict[str, Any] = {"classes": classes, "seed": seed, "curves": {
                label: {key: [(e["step"], e[key]) for e in h] for key in MEASURES} for label, h in histories.items()}}
            for label in args.arms:
                for key in MEASURES:
                    row[f"{label}/{key}"] = saving(histories, label, key, args.eval_every)
                    for threshold in args.thresholds:
                        row[f"{label}/{key}@{threshold}"] = saving(histories, label, key, args.eval_every, threshold)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "curves"}), flush=True)
    if not rows:
        raise SystemExit(f"no complete (target, seed) pair in {out}")
    summary: dict[str, Any] = {"source": args.source, "source_steps": args.source_steps, "steps": args.steps,
                               "eval_every": args.eval_every, "seeds": args.seeds, "rows": rows}
    for label in args.arms:
        for key in [*MEASURES, *(f"{m}@{t}" for m in MEASURES for t in args.thresholds)]:
            savings = [r[f"{label}/{key}"]["saving"] for r in rows if r[f"{label}/{key}"]["saving"] is not None]
            summary[f"{label}/{key}/saving_mean_ci95"] = mean_ci(savings)
            summary[f"{label}/{key}/reached"] = f"{len(savings)}/{len(rows)}"
    for label in ("cold", *args.arms):  # mean accuracy over the (target, seed) pairs at each recorded step
        for key in MEASURES:
            first = rows[0]["curves"][label][key]
            summary[f"{label}/{key}/mean_curve"] = [
                (step, round(statistics.mean(r["curves"][label][key][i][1] for r in rows), 4))
                for i, (step, _) in enumerate(first)]
    if not args.summarize:
        summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "warm_start.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))


if __name__ == "__main__":
    main()
