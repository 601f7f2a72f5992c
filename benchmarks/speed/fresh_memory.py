"""What a new 15 MB activation costs with glibc's default malloc and with metalab's reuse setting.

    python benchmarks/speed/fresh_memory.py [--threads 2] [--repeats 40]

Times ``torch.zeros(75, 64, 28, 28)`` (Conv-4's first activation for 75 Omniglot queries, 15 MB)
while the previous few such tensors are freed, as in a meta-iteration, in two child processes:
glibc's defaults (large blocks are fresh ``mmap`` pages, returned on ``free``) and after
:func:`metalab.train.allocator.reuse_freed_memory` (freed blocks stay in the heap). Prints the
median milliseconds per tensor and the process's system (kernel) time.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(reuse: bool, threads: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    if reuse:
        from metalab.train.allocator import reuse_freed_memory

        assert reuse_freed_memory(), "this C library is not glibc"
    alive, times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        alive.append(torch.zeros(75, 64, 28, 28))
        times.append(time.perf_counter() - start)
        if len(alive) > 3:
            alive.pop(0)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"reuse_freed_memory": reuse, "median_ms": 1e3 * statistics.median(times[3:]),
            "system_s": usage.ru_stime, "minor_faults": usage.ru_minflt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--child", choices=["default", "reuse"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "reuse", args.threads, args.repeats)))
        return
    for mode in ("default", "reuse"):
        done = subprocess.run([sys.executable, __file__, "--child", mode, "--threads", str(args.threads),
                               "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
        result = json.loads(done.stdout)
        print(f"{mode:>8}: {result['median_ms']:.2f} ms per new 15 MB tensor, {result['minor_faults']} page faults, "
              f"{result['system_s']:.2f} s system time")


if __name__ == "__main__":
    main()
