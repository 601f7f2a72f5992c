"""Leave-one-dataset-out benchmark over the whole meta-dataset (a tabular benchmark: every score is
looked up, so a 50-evaluation run costs only the optimiser's own time).

Writes ``<out>/lodo.jsonl`` (one row per task x method x seed; resumable: rows already there are
skipped), then ``regret.png``, ``summary.csv``, and prints the regret table, the evaluations each
method needs to reach cold-start TPE's regret at 50 evaluations, and the algorithm-selection
accuracy against always picking the learner that is most often best.

    nice -n 15 .venv/bin/python benchmarks/automl/lodo.py --metadataset benchmarks/automl/metadataset.sqlite \
        --out benchmarks/automl/lodo --methods random tpe portfolio ranking knn rgpe pmf gp-design
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from metalab.automl.leave_one_out import (
    METHODS,
    SurrogateCache,
    evaluate_task,
    evaluations_to_match,
    mean_curves,
    summarise,
)
from metalab.automl.metadataset import load_metadataset
from metalab.automl.report import report_benchmark

_LOADED: dict[str, tuple] = {}


def loaded(path: str, cache_path: Path):
    """The meta-dataset and the per-task surrogates, read once per process."""
    if path not in _LOADED:
        meta = load_metadataset(path)
        cache = None
        if cache_path.exists():
            with cache_path.open("rb") as file:
                cache = pickle.load(file)
        _LOADED[path] = (meta, cache)
    return _LOADED[path]


def work(path: str, cache_path: Path, task: str, methods: list[str], budget: int, seed: int) -> list[dict]:
    meta, cache = loaded(path, cache_path)
    rows = []
    for method in methods:
        start = time.perf_counter()
        rows += evaluate_task(meta, task, [method], budget, seed, cache)
        rows[-1]["seconds"] = time.perf_counter() - start
    return rows


def algorithm_selection(meta) -> dict[str, float]:
    """Leave-one-dataset-out accuracy of the learner selector and of the most-often-best learner, and
    the mean normalised regret of each choice's best configuration on the held-out task."""
    from collections import Counter

    from metalab.automl.selection import LearnerSelector, best_learners

    truth = best_learners(meta)
    regret = meta.normalised_regret()
    hits = {"selector": [], "most_often_best": []}
    regrets = {"selector": [], "most_often_best": []}
    for t, task in enumerate(meta.tasks):
        train = meta.without(task)
        choices = {"selector": LearnerSelector.fit(train).predict(meta.metafeatures.loc[task]),
                   "most_often_best": Counter(best_learners(train)).most_common(1)[0][0]}
        for name, learner in choices.items():
            hits[name].append(learner == truth[t])
            columns = [i for i, c in enumerate(meta.configurations) if c.learner == learner]
            regrets[name].append(regret[t, columns].min())
    return {f"{name} accuracy": float(np.mean(hits[name])) for name in hits} | \
        {f"{name} regret of its tuned learner": float(np.mean(regrets[name])) for name in regrets} | \
        {"best learner counts": dict(Counter(truth))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadataset", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--methods", nargs="+", default=list(METHODS) + ["gp-design"])
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--tasks", type=int, help="only the first N tasks")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N tasks (split a run over processes)")
    parser.add_argument("--summary-only", action="store_true", help="skip running; summarise lodo.jsonl")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "lodo.jsonl"
    meta = load_metadataset(args.metadataset)
    tasks = (meta.tasks[: args.tasks] if args.tasks else meta.tasks)[args.skip :]
    done = set()
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done.add((row["task"], row["method"], row["seed"]))
    jobs = [(task, [m for m in args.methods if (task, m, seed) not in done], seed)
            for seed in range(args.seeds) for task in tasks]
    jobs = [job for job in jobs if job[1]]
    cache_path = out / "surrogates.pkl"
    if not cache_path.exists() and "rgpe" in args.methods and jobs and not args.summary_only:
        # each known task's GP is fitted on that task's own scores only, so one fit per task serves
        # every fold in which the task is a known task (and is never used when it is held out)
        from metalab.automl.rgpe import encode
        from metalab.utils.io import atomic_write

        start = time.perf_counter()
        cache = SurrogateCache(encode(meta.configurations))
        cache.predictions(meta)
        atomic_write(cache_path, lambda file: pickle.dump(cache, file))
        print(f"fitted {len(meta.tasks)} per-task surrogates in {time.perf_counter() - start:.0f}s", flush=True)
    if not args.summary_only and jobs:
        print(f"{len(jobs)} (task, seed) jobs to run", flush=True)
        with rows_path.open("a") as sink:
            def save(rows: list[dict]) -> None:
                for row in rows:
                    sink.write(json.dumps(row) + "\n")
                sink.flush()
                print(f"{rows[0]['task']} seed {rows[0]['seed']}: " +
                      ", ".join(f"{r['method']} {r['seconds']:.1f}s" for r in rows if "seconds" in r), flush=True)

            if args.jobs <= 1:
                for task, methods, seed in jobs:
                    save(work(args.metadataset, cache_path, task, methods, args.budget, seed))
            else:
                with ProcessPoolExecutor(args.jobs) as pool:
                    futures = [pool.submit(work, args.metadataset, cache_path, *job[:2], args.budget, job[2])
                               for job in jobs]
                    for future in as_completed(futures):
                        save(future.result())

    report_benchmark(out)
    rows = pd.read_json(rows_path, lines=True)
    summary = summarise(rows)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    curves = mean_curves(rows)
    if "tpe" in curves:
        print(f"evaluations to reach TPE's mean regret at {args.budget}:",
              evaluations_to_match(curves, "tpe", args.budget))
    seconds = rows.groupby("method")["seconds"].mean() if "seconds" in rows else None
    if seconds is not None:
        print("mean optimiser seconds per task:", seconds.round(2).to_dict())
    selection = algorithm_selection(meta)
    print("algorithm selection (leave-one-dataset-out):", json.dumps(selection))
    (out / "selection.json").write_text(json.dumps(selection, indent=1))
    return 0


if __name__ == "__main__":
    import torch
    from threadpoolctl import threadpool_limits

    # one thread per process: BLAS and torch threads fighting over 2 shared cores made the GP fits
    # about 8x slower; parallelism comes from --jobs
    torch.set_num_threads(1)
    with threadpool_limits(1):
        sys.exit(main())
