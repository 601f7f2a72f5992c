"""FTML vs its baselines on the Rainbow digits stream: the learning-efficiency curve (not a test).

    python benchmarks/noniid/ftml_rainbow.py [--per-stage 3] [--size 16] [--target 0.7] --out DIR

Tasks: the first ``--per-stage`` tasks of each of the four rotation stages of :class:`RainbowDigits` (10-way
digits under a colour, scale and rotation), in stream order. Every method starts from the same Conv-4 weights and
sees the same data in the same order: n datapoints per arrival up to N (``--arrival``, ``--max-data``), then
``--updates`` parameter updates. Writes ``DIR/ftml_rainbow.json`` (per method and task: datapoints needed to reach
``--target`` accuracy on the task's held-out images, accuracies per arrival) and ``DIR/ftml_rainbow.png``.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from metalab.algorithms.gradient.maml import MAML
from metalab.data.streams import RainbowDigits
from metalab.train.online import METHODS, OnlineOptions, run_online

LABELS = {"ftml": "FTML", "ftl": "FTL (joint training + fine-tuning)", "toe": "TOE (train on everything)",
          "tfs": "TFS (train from scratch)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-stage", type=int, default=3)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--arrival", type=int, default=20)
    parser.add_argument("--max-data", type=int, default=100)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--out", default="benchmarks/noniid")
    args = parser.parse_args()
    stream = RainbowDigits(shots=args.max_data // 10, queries=10, seed=0, image_size=args.size)
    chosen = [s * stream.tasks_per_stage + i for s in range(len(stream.names)) for i in range(args.per_stage)]
    tasks = [stream.task(t) for t in chosen]
    options = OnlineOptions(arrival=args.arrival, max_data=args.max_data, updates=args.updates, target=args.target)
    results: dict = {"stream_tasks": chosen, "options": asdict(options), "args": vars(args), "methods": {}}
    for method in METHODS:
        torch.manual_seed(0)
        learner = MAML(MAML.Options(ways=10, hidden=args.hidden, inner_steps=1, inner_steps_test=5, inner_lr=0.1),
                       (3, args.size, args.size))
        start = time.perf_counter()
        records = run_online(learner, tasks, options, method)
        seconds = time.perf_counter() - start
        results["methods"][method] = {"seconds": seconds, "tasks": [asdict(r) for r in records]}
        print(method, f"{seconds:.0f} s", [r.efficiency for r in records],
              [round(r.final_accuracy, 2) for r in records], flush=True)
    out = Path(args.out)
    (out / "ftml_rainbow.json").write_text(json.dumps(results, indent=2))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    cap = args.max_data + args.arrival
    for method in METHODS:
        records = results["methods"][method]["tasks"]
        left.plot(range(len(records)), [r["efficiency"] or cap for r in records], "o-", label=LABELS[method])
        right.plot(range(len(records)), [r["final_accuracy"] for r in records], "o-", label=LABELS[method])
    left.axhline(cap, color="grey", lw=0.5)
    left.set(xlabel="task index in the stream", ylabel=f"datapoints to reach {args.target:.0%} (top line: not reached)",
             title="learning efficiency (lower is better)")
    right.set(xlabel="task index in the stream", ylabel="accuracy after all N datapoints", title="final accuracy")
    for axis in (left, right):
        for boundary in range(args.per_stage, len(chosen), args.per_stage):
            axis.axvline(boundary - 0.5, color="grey", ls=":", lw=0.7)
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "ftml_rainbow.png", dpi=110)


if __name__ == "__main__":
    main()
