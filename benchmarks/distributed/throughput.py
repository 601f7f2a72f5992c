"""Meta-iterations per second of `metalab train` on 1 and several processes (torchrun), same total meta-batch.

Each measurement is a real `metalab train` run (one process: `python -m metalab`; N processes:
`torchrun --nproc_per_node N -m metalab`), read back from the run's metrics.jsonl: the trainer logs
steps_per_second over windows of `train.log_every` steps, measured on rank 0 between optimiser
steps (so it includes the gradient all-reduce and any wait for the slowest rank). The first
`--warmup` steps (data loading, allocator warm-up) are left out.

On a machine shared with other jobs, meta-iterations per second measure the share of the CPU the
scheduler gives each configuration as much as the configuration itself. `--short-steps S` adds a
measure that does not depend on that share: each configuration also runs for S steps, and the CPU
time (user + system, all processes of the run) of the long run minus that of the short one, divided
by the extra steps, is the CPU time one meta-iteration costs (start-up and the final test cancel).

    python benchmarks/distributed/throughput.py                       # ProtoNet and MAML, 1 and 2 processes
    python benchmarks/distributed/throughput.py --procs 1 2 4 --device cuda --steps 52 --warmup 12

Prints one Markdown table row per run (append them to RESULTS.md by hand, with the machine's state).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (recipe, overrides). Same total meta-batch for every number of processes.
SETTINGS = {
    # the ProtoNet recipe's 60-way 1-shot, 5-query training episodes, 2 per meta-batch (2 x 360 images)
    "protonet": ("omniglot-protonet-5w1s", ["task.meta_batch=2", "eval.episodes=10", "train.val_every=0",
                                            "run.tensorboard=false", "train.progress=false"]),
    # MAML 5-way 1-shot, 15 queries, second order, meta-batch 8 (8 x 80 images)
    "maml": (str(HERE / "omniglot-maml-5w1s.yaml"), []),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(procs: int, recipe: str, overrides: list[str]) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "metalab", "train", recipe, *overrides]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "metalab", "train", recipe,
            *overrides]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, procs: int, threads: int, steps: int, warmup: int, device: str, meta_batch: int | None,
            timeout: int) -> dict:
    recipe, overrides = SETTINGS[name]
    log_every = 2 if warmup % 2 == 0 and (steps - warmup) % 2 == 0 else 1
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-{procs}p-") as run_dir:
        overrides = [*overrides, f"train.steps={steps}", f"train.log_every={log_every}", f"speed.threads={threads}",
                     f"train.device={device}", f"run.dir={run_dir}/run", "train.ckpt_every=100000"]
        if meta_batch:
            overrides.append(f"task.meta_batch={meta_batch}")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
        start, cpu_start = time.perf_counter(), children_cpu_seconds()
        done = subprocess.run(command(procs, recipe, overrides), capture_output=True, text=True, env=env,
                              timeout=timeout)
        wall, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu_start
        if done.returncode:
            raise SystemExit(f"{name} on {procs} process(es) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        records = [json.loads(line) for line in (Path(run_dir) / "run" / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if r["kind"] == "train" and r["step"] > warmup]
    seconds = sum(log_every / r["steps_per_second"] for r in windows) if windows else float("nan")
    return {"learner": name, "processes": procs, "threads_per_process": threads, "device": device,
            "steps_timed": len(windows) * log_every, "seconds": seconds,
            "meta_iterations_per_second": len(windows) * log_every / seconds, "wall_seconds": wall,
            "cpu_seconds": cpu, "steps": steps,
            "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--short-steps", type=int, help="also run this many steps, for CPU seconds per meta-iteration")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    parser.add_argument("--meta-batch", type=int, help="override the total meta-batch (must divide by every --procs)")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per run before it is killed")
    parser.add_argument("--json", help="also append each result as a JSON line to this file")
    args = parser.parse_args()
    print("| learner | processes | threads/process | device | steps timed | meta-it/s | CPU s / meta-it | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.learners:
        for procs in args.procs:
            threads = args.threads or max(1, (os.cpu_count() or 1) // procs)
            result = measure(name, procs, threads, args.steps, args.warmup, args.device, args.meta_batch, args.timeout)
            cpu_per_step = "-"
            if args.short_steps:
                short = measure(name, procs, threads, args.short_steps, 0, args.device, args.meta_batch, args.timeout)
                result["cpu_seconds_per_meta_iteration"] = (result["cpu_seconds"] - short["cpu_seconds"]) / (
                    args.steps - args.short_steps)
                cpu_per_step = f"{result['cpu_seconds_per_meta_iteration']:.2f}"
            print(f"| {name} | {procs} | {threads} | {args.device} | {result['steps_timed']} | "
                  f"{result['meta_iterations_per_second']:.3f} | {cpu_per_step} | {result['load_average']:.1f} |",
                  flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as file:
                    file.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
