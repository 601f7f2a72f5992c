"""SNAIL's query pass: one full sequence per query vs the shared support prefix (benchmarks/model/RESULTS.md).

    taskset -c 1 .venv/bin/python benchmarks/model/snail_prefix_speed.py

The temporal network of ``omniglot-snail-20w1s`` (64-d embeddings + 20-way one-hot labels, 20
outputs, sequences of 21 steps, 128 filters) on random steps of one meta-batch: 8 tasks, 20 support
steps, 100 queries each. Prints the forward+backward time of both paths (min of 3 after a warm-up)
and their largest output difference.
"""
from __future__ import annotations

import time

import torch

from metalab.algorithms.model.components.sequence import query_sequences
from metalab.algorithms.model.snail import SNAILNet


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = SNAILNet(84, 20, 21, 128)
    prefix, queries = torch.randn(8, 20, 84), torch.randn(8, 100, 84)
    paths = {
        "one sequence per query": lambda: net(query_sequences(prefix, queries))[:, -1].view(8, 100, 20),
        "shared prefix": lambda: net.query_outputs(prefix, queries),
    }
    outputs = {}
    for name, run in paths.items():
        times = []
        for _ in range(4):
            start = time.perf_counter()
            out = run()
            out.sum().backward()
            times.append(time.perf_counter() - start)
        outputs[name] = out.detach()
        print(f"{name}: forward+backward {min(times[1:]):.3f} s (min of 3 after 1 warm-up)", flush=True)
    difference = (outputs["one sequence per query"] - outputs["shared prefix"]).abs().max().item()
    print(f"largest output difference (float32): {difference:.2e}")


if __name__ == "__main__":
    main()
