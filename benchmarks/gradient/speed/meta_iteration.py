"""Time one MAML meta-iteration (inner loop, meta-backward, Adam step) for metalab and its peers.

    python benchmarks/gradient/speed/meta_iteration.py [--iterations 10] [--warmup 2] [--threads 2]
        [--configs so1 so5 fo5] [--ways 5 20] [--libraries metalab higher torchopt ...] [--json out.json]

Every (library, configuration) runs in its own process on the same weights (seed 0) and the same
tasks (random Omniglot-sized images, seed 1): Conv-4 (64 channels) + linear head, 28x28 inputs,
N-way 1-shot, 15 queries per class, meta-batch 32. Reported: the median seconds per meta-iteration
after warm-up, and the process's peak resident memory (ru_maxrss) and its growth over the memory
after setup. ``plain`` is the limit: one forward+backward of the same Conv-4 over the same images
(support + queries of all tasks) with shared weights.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections import OrderedDict

CONFIGS = {"so1": (1, False), "so5": (5, False), "fo5": (5, True)}  # inner steps, first order
LIBRARIES = ["plain", "metalab", "metalab-cl", "metalab-bf16", "metalab-serial", "metalab-ckpt", "higher", "torchopt"]
TASKS, SHOTS, QUERIES = 32, 1, 15


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(ways: int):
    import torch
    from torch import nn

    from metalab.nn.backbones import Conv4

    torch.manual_seed(0)
    network = nn.Sequential(OrderedDict(body=Conv4(1, 64), head=nn.Linear(64, ways)))
    generator = torch.Generator().manual_seed(1)
    support_x = torch.rand(TASKS, ways * SHOTS, 1, 28, 28, generator=generator)
    query_x = torch.rand(TASKS, ways * QUERIES, 1, 28, 28, generator=generator)
    support_y = torch.arange(ways).repeat_interleave(SHOTS).expand(TASKS, -1).contiguous()
    query_y = torch.arange(ways).repeat_interleave(QUERIES).expand(TASKS, -1).contiguous()
    return network, support_x, support_y, query_x, query_y


def step_function(library: str, ways: int, steps: int, first_order: bool):
    """A closure doing one meta-iteration, for ``library``."""
    import torch
    import torch.nn.functional as F

    network, sx, sy, qx, qy = setup(ways)
    lr = 0.4 if steps == 1 else 0.1
    if library.startswith("metalab"):
        from metalab.algorithms.gradient.maml import MAML

        options = {"metalab": {}, "metalab-cl": {"channels_last": True},
                   "metalab-bf16": {"channels_last": True, "precision": "bf16"},
                   "metalab-serial": {"task_chunk": 1}, "metalab-ckpt": {"checkpoint": True}}[library]
        learner = MAML(MAML.Options(name="maml", ways=ways, inner_steps=steps, inner_lr=lr,
                                    first_order=first_order, **options), (1, 28, 28))
        learner.network.load_state_dict(network.state_dict())
        from metalab.data.task import Task

        batch = Task(sx, sy, qx, qy)
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)

        def run():
            optimizer.zero_grad(set_to_none=True)
            learner.meta_step(batch)
            optimizer.step()
        return run

    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    if library == "plain":
        images = torch.cat([sx.flatten(0, 1), qx.flatten(0, 1)])
        labels = torch.cat([sy.flatten(), qy.flatten()])

        def run():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(network(images), labels).backward()
            optimizer.step()
        return run

    if library == "higher":
        import higher

        def run():
            optimizer.zero_grad(set_to_none=True)
            for t in range(TASKS):
                inner = torch.optim.SGD(network.parameters(), lr=lr)
                with higher.innerloop_ctx(network, inner, copy_initial_weights=False,
                                          track_higher_grads=not first_order) as (fnet, diffopt):
                    for _ in range(steps):
                        diffopt.step(F.cross_entropy(fnet(sx[t]), sy[t]))
                    loss = F.cross_entropy(fnet(qx[t]), qy[t]) / TASKS
                    if first_order:  # the query gradient at the adapted weights, added to the meta-gradient
                        grads = torch.autograd.grad(loss, list(fnet.parameters()))
                        for p, g in zip(network.parameters(), grads):
                            p.grad = g if p.grad is None else p.grad + g
                    else:
                        loss.backward()
            optimizer.step()
        return run

    if library == "torchopt":
        import torchopt

        if first_order:
            raise NotImplementedError("first-order MAML is not a TorchOpt recipe; not measured")
        inner = torchopt.MetaSGD(network, lr=lr)

        def run():
            optimizer.zero_grad(set_to_none=True)
            net_state = torchopt.extract_state_dict(network)
            opt_state = torchopt.extract_state_dict(inner)
            for t in range(TASKS):
                for _ in range(steps):
                    inner.step(F.cross_entropy(network(sx[t]), sy[t]))
                (F.cross_entropy(network(qx[t]), qy[t]) / TASKS).backward()
                torchopt.recover_state_dict(network, net_state)
                torchopt.recover_state_dict(inner, opt_state)
            optimizer.step()
        return run
    raise ValueError(f"unknown library {library!r}")


def child(library: str, ways: int, config: str, iterations: int, warmup: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    steps, first_order = CONFIGS[config]
    run = step_function(library, ways, steps, first_order)
    setup_rss = rss_mb()
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"library": library, "ways": ways, "config": config, "median_s": statistics.median(times),
            "min_s": min(times), "times": times, "peak_rss_mb": rss_mb(), "setup_rss_mb": setup_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--libraries", nargs="+", default=LIBRARIES)
    parser.add_argument("--json", help="append one JSON line per measurement to this file")
    parser.add_argument("--child", nargs=3, metavar=("LIBRARY", "WAYS", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        library, ways, config = args.child
        print(json.dumps(child(library, int(ways), config, args.iterations, args.warmup, args.threads)))
        return
    print(f"{'ways':>4} {'config':>6} {'library':>15} {'median s':>9} {'min s':>7} {'peak MB':>8} {'growth MB':>9}")
    for ways in args.ways:
        for config in args.configs:
            for library in args.libraries:
                if library == "plain" and config != args.configs[0]:
                    continue
                command = [sys.executable, __file__, "--child", library, str(ways), config,
                           "--iterations", str(args.iterations), "--warmup", str(args.warmup),
                           "--threads", str(args.threads)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
                    print(f"{ways:>4} {config:>6} {library:>15}   not measured: {reason}")
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{ways:>4} {config if library != 'plain' else 'fwd+bwd':>6} {library:>15} "
                      f"{result['median_s']:9.3f} {result['min_s']:7.3f} {result['peak_rss_mb']:8.0f} "
                      f"{result['peak_rss_mb'] - result['setup_rss_mb']:9.0f}", flush=True)
                if args.json:
                    with open(args.json, "a") as out:
                        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
