"""Peak memory and time of ONE meta-iteration against the number of inner steps, per gradient-based method.

Second-order MAML keeps the graph of every inner step for its meta-backward, so its memory grows with the steps;
the speed backend (``speed.engine: accel``, every method's default) also slices the meta-batch into groups of tasks
whose meta-backward runs one after the other, fewer tasks per group the more steps a group holds (``maml``), where
the reference engine holds the whole meta-batch's graph at once (``maml-reference``); the checkpointed unroll
(``speed.checkpoint_inner_loop``) holds one step's graph at a time but recomputes; first-order
MAML, iMAML (implicit gradient) and WarpGrad (trajectory objective) keep no graph across steps. Each measurement runs
in a fresh process: a Conv-4 (64 channels) learner, random Omniglot-shaped tasks (28x28, ``--ways`` x 1 shot, 1 query
per class as the recipes train), one ``meta_step``; the figure is the process's peak resident size after the step
(``resource.getrusage``) minus its resident size just before it (``/proc/self/statm``). First-use costs (libraries
loaded, thread pools, kernels) are paid before, by one meta-step of a tiny learner (2 channels, 1 task, 1 step) of
the same method (``--no-warmup`` counts them). The children run with glibc's mmap threshold fixed at 64 KiB
(``MALLOC_MMAP_THRESHOLD_``), so that every large tensor is mapped and unmapped and the resident size follows the
memory held: with glibc's default dynamic threshold, freed buffers stay in the heap and its fragmentation grows
with the number of allocations, i.e. with the inner steps, for every method (``--glibc-default`` measures that).

    python benchmarks/gradient/memory_vs_steps.py --ways 5 --meta-batch 32 --out benchmarks/gradient/memory.jsonl
    python benchmarks/gradient/memory_vs_steps.py --plot benchmarks/gradient/memory.jsonl   # or --table
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

#: method -> (learner name, options beyond the shared ones, speed options)
METHODS: dict[str, tuple[str, dict, dict]] = {
    "maml": ("maml", {"inner_lr": 0.4}, {}),
    "maml-reference": ("maml", {"inner_lr": 0.4}, {"engine": "reference"}),
    "maml-checkpointed": ("maml", {"inner_lr": 0.4}, {"checkpoint_inner_loop": True}),
    "fomaml": ("fomaml", {"inner_lr": 0.4}, {}),
    "imaml": ("imaml", {"inner_lr": 0.1, "prox_lambda": 2.0, "cg_steps": 5}, {}),
    "warpgrad": ("warpgrad", {"inner_lr": 0.1}, {}),
}
STEPS = [1, 5, 10, 25, 50]


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def measure(method: str, ways: int, meta_batch: int, steps: int, warmup: bool = True) -> dict:
    """One process: one meta-iteration of ``method`` with ``steps`` inner steps."""
    import torch

    from metalab.algorithms.registry import learner_class
    from metalab.data.task import Task
    from metalab.nn.execution import SpeedOptions

    torch.set_num_threads(1)
    torch.manual_seed(0)
    name, options, speed = METHODS[method]
    cls = learner_class(name)
    learner = cls(cls.Options(name=name, ways=ways, hidden=64, inner_steps=steps, **options), (1, 28, 28),
                  SpeedOptions(**speed))

    def tasks(count: int) -> Task:
        labels = torch.arange(ways).expand(count, -1)
        return Task(torch.rand(count, ways, 1, 28, 28), labels, torch.rand(count, ways, 1, 28, 28), labels)

    if warmup:  # first-use costs (libraries, thread pools, kernels) by a tiny learner of the same method
        tiny = cls(cls.Options(name=name, ways=ways, hidden=2, inner_steps=1, **options), (1, 28, 28),
                   SpeedOptions(**speed))
        tiny.meta_step(tasks(1))
        del tiny
    batch = tasks(meta_batch)
    before, peak_before = resident_mb(), peak_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    learner.meta_step(batch)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"method": method, "ways": ways, "shots": 1, "meta_batch": meta_batch, "inner_steps": steps,
            "warmup": warmup, "mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default"),
            "peak_increase_mb": round(peak_mb() - before, 1), "resident_before_mb": round(before, 1),
            "peak_before_mb": round(peak_before, 1), "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2)}


def plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ways_list = sorted({row["ways"] for row in rows})
    figure, axes = plt.subplots(1, len(ways_list), figsize=(6.5 * len(ways_list), 4.8), squeeze=False)
    for axis, ways in zip(axes[0], ways_list):
        for method in METHODS:
            for meta_batch in sorted({r["meta_batch"] for r in rows if r["ways"] == ways and r["method"] == method}):
                points = sorted((r["inner_steps"], r["peak_increase_mb"]) for r in rows
                                if (r["method"], r["ways"], r["meta_batch"]) == (method, ways, meta_batch))
                if len(points) > 1:
                    axis.plot(*zip(*points), marker="o", label=f"{method} (meta-batch {meta_batch})")
        axis.set(title=f"Conv-4, {ways}-way 1-shot: one meta-iteration", xlabel="inner steps",
                 ylabel="peak memory increase (MiB)", yscale="log")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path.with_name("memory_vs_steps.png"), dpi=100)


def table(path: Path) -> str:
    """The JSON lines of ``path`` as a markdown table: MiB (wall seconds, and CPU seconds where measured) per method
    and inner steps."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = sorted({row["inner_steps"] for row in rows})
    lines = ["| ways, meta-batch | method | " + " | ".join(f"{k} steps" for k in steps) + " |",
             "| --- | --- |" + " --- |" * len(steps)]
    for ways, meta_batch, method in sorted({(r["ways"], r["meta_batch"], r["method"]) for r in rows},
                                           key=lambda key: (key[0], key[1], list(METHODS).index(key[2]))):
        cells = {r["inner_steps"]: f"{r['peak_increase_mb']:.1f} ({r['seconds']:.1f} s"
                 + (f", CPU {r['cpu_seconds']:.1f} s)" if "cpu_seconds" in r else ")") for r in rows
                 if (r["ways"], r["meta_batch"], r["method"]) == (ways, meta_batch, method)}
        lines.append(f"| {ways}w1s, {meta_batch} | {method} | " + " | ".join(cells.get(k, "-") for k in steps) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, nargs="+", default=STEPS)
    parser.add_argument("--no-warmup", action="store_true", help="count first-use costs in the figure")
    parser.add_argument("--glibc-default", action="store_true", help="keep glibc's dynamic mmap threshold")
    parser.add_argument("--out", type=Path, help="append one JSON line per measurement here")
    parser.add_argument("--plot", type=Path, help="plot the JSON lines of this file (memory_vs_steps.png beside it)")
    parser.add_argument("--table", type=Path, help="print the JSON lines of this file as a markdown table")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # the child process: METHOD STEPS
    args = parser.parse_args()
    if args.plot:
        plot(args.plot)
        return
    if args.table:
        print(table(args.table))
        return
    if args.one:
        print(json.dumps(measure(args.one[0], args.ways, args.meta_batch, int(args.one[1]), not args.no_warmup)))
        return
    for method in args.methods:
        for steps in args.steps:
            child = [sys.executable, __file__, "--ways", str(args.ways), "--meta-batch", str(args.meta_batch),
                     "--one", method, str(steps)] + (["--no-warmup"] if args.no_warmup else [])
            env = dict(os.environ) if args.glibc_default else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            line = subprocess.run(child, check=True, capture_output=True, text=True,
                                  env=env).stdout.strip().splitlines()[-1]
            print(line, flush=True)
            if args.out:
                with args.out.open("a") as out:
                    out.write(line + "\n")


if __name__ == "__main__":
    main()
