"""Time one MAML meta-iteration (inner loop, meta-backward, Adam step) for metalab and its peers.

    python benchmarks/speed/meta_iteration.py [--iterations 10] [--rounds 1] [--warmup 2] [--threads 2] [--cpus 0]
        [--configs so1 so5 fo5] [--ways 5 20] [--libraries metalab higher torchopt ...] [--json out.json]
    python benchmarks/speed/meta_iteration.py --check [--ways 5] [--configs ...] [--libraries ...]
    python benchmarks/speed/meta_iteration.py --profile LIBRARY WAYS CONFIG [--threads 2]
    python benchmarks/speed/meta_iteration.py --interleave --libraries metalab torchopt ... [--ways 5] [--configs so1]

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
from collections.abc import Callable

CONFIGS = {"so1": (1, False), "so5": (5, False), "fo5": (5, True)}  # inner steps, first order
#: metalab's execution paths (speed options); all give the same meta-gradient (tests compare with higher and the
#: reference engine). Which one was the default when: benchmarks/speed/RESULTS.md.
METALAB_PATHS = {
    "metalab": {},  # the defaults
    "metalab-reference": {"engine": "reference"},  # plain PyTorch, task by task (the specification)
    "metalab-nchw": {"channels_last": False},
    "metalab-winograd": {"winograd": True},  # the query pass's second layer on NNPACK
    "metalab-no-winograd": {"winograd": False},  # ... on oneDNN
    "metalab-no-native": {"native_kernels": False, "winograd": False},  # first block's ReLU + max-pool in PyTorch
    "metalab-no-fold": {"fold_conv_norm": False},  # first conv + BatchNorm as separate PyTorch kernels
    "metalab-all-cl": {"inner_channels_last": None},  # inner loop channels-last too
    "metalab-ckpt": {"checkpoint": True},
    # second-order inner loop recomputed one step at a time in the meta-backward
    "metalab-ckpt-inner": {"checkpoint_inner_loop": True},
    "metalab-ckpt-inner-task-by-task": {"checkpoint_inner_loop": True, "task_chunk": 1},
    "metalab-ckpt-inner-chunk8": {"checkpoint_inner_loop": True, "task_chunk": 8},
    "metalab-task-by-task": {"task_chunk": 1},  # the inner loop task by task
    "metalab-folded-inner": {"task_chunk": 0},  # inner loop of all tasks folded into grouped kernels
    "metalab-chunk2": {"task_chunk": 2},  # inner loop of 2 tasks at a time in grouped kernels
    "metalab-chunk3": {"task_chunk": 3},
    "metalab-chunk4": {"task_chunk": 4},
    "metalab-chunk8": {"task_chunk": 8},
    "metalab-chunk16": {"task_chunk": 16},
    "metalab-task-by-task-winograd": {"task_chunk": 1, "winograd": True},
    "metalab-folded": {"task_chunk": 0, "query_chunk": 32},  # inner loop and query pass folded
    "metalab-bf16": {"precision": "bf16"},  # bf16 autocast of the forward passes
    "metalab-default-malloc": {},  # the default path in a process with glibc's default malloc thresholds
}
LIBRARIES = ["plain", "plain-tasks", "plain-tasks-cl", *METALAB_PATHS, "higher", "torchopt", "learn2learn"]
TASKS, SHOTS, QUERIES = 32, 1, 15


def machine_description() -> str:
    """The CPU these figures come from: speed tables differ by CPU kind (e.g. AVX2 vs AVX-512; see RESULTS.md)."""
    import os
    import platform

    import torch

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    family = f", family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{name}{family}, {cores} cores, PyTorch {torch.__version__} "
            f"capability {torch.backends.cpu.get_cpu_capability()}")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_calls(function: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``function``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


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


def learn2learn_maml():
    """learn2learn's MAML class. learn2learn 0.2.0 imports torchvision at package import, and no
    torchvision wheel on PyPI loads with the CPU build of torch 2.13 ("operator torchvision::nms does
    not exist"), so when the package import fails, its (unmodified) ``utils`` and ``algorithms.maml``
    modules are loaded under empty parent packages, without running the package ``__init__``s."""
    import importlib
    import importlib.util
    import types

    if "learn2learn.algorithms.maml" in sys.modules:
        return sys.modules["learn2learn.algorithms.maml"].MAML
    try:
        import learn2learn

        return learn2learn.algorithms.MAML
    except (ImportError, RuntimeError):
        for name in [n for n in sys.modules if n.startswith("learn2learn")]:
            del sys.modules[name]
    spec = importlib.util.find_spec("learn2learn")
    if spec is None:
        raise ImportError("learn2learn is not importable: build it and put it on PYTHONPATH "
                          "(see benchmarks/speed/RESULTS.md)")
    root = spec.submodule_search_locations[0]
    for package, path in (("learn2learn", root), ("learn2learn.algorithms", f"{root}/algorithms")):
        module = types.ModuleType(package)
        module.__path__ = [path]
        sys.modules[package] = module
    return importlib.import_module("learn2learn.algorithms.maml").MAML


def step_function(library: str, ways: int, steps: int, first_order: bool):
    """A closure doing one meta-iteration, for ``library``."""
    import torch
    import torch.nn.functional as F

    network, sx, sy, qx, qy = setup(ways)
    lr = 0.4 if steps == 1 else 0.1
    if library.startswith("metalab"):
        from metalab.algorithms.gradient.maml import MAML
        from metalab.nn.execution import SpeedOptions

        learner = MAML(MAML.Options(name="maml", ways=ways, inner_steps=steps, inner_lr=lr, first_order=first_order),
                       (1, 28, 28), SpeedOptions(**METALAB_PATHS[library]))
        learner.network.load_state_dict(network.state_dict())
        from metalab.data.task import Task

        batch = Task(sx, sy, qx, qy)
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)

        def run():
            optimizer.zero_grad(set_to_none=True)
            learner.meta_step(batch)
            optimizer.step()
        run.parameters = list(learner.network.parameters())
        return run

    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    if library == "plain":
        images = torch.cat([sx.flatten(0, 1), qx.flatten(0, 1)])
        labels = torch.cat([sy.flatten(), qy.flatten()])

        def run():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(network(images), labels).backward()
            optimizer.step()
        run.parameters = list(network.parameters())
        return run

    if library in ("plain-tasks", "plain-tasks-cl"):  # one forward+backward per task (support + queries)
        memory = torch.channels_last if library.endswith("-cl") else torch.contiguous_format
        network.to(memory_format=memory)
        if library.endswith("-cl"):  # a 1-channel input's convolution returns the default layout: convert
            network.body.blocks[0][0].register_forward_hook(
                lambda module, inputs, out: out.contiguous(memory_format=memory))
        images = torch.cat([sx, qx], 1).contiguous()
        labels = torch.cat([sy, qy], 1)

        def run():
            optimizer.zero_grad(set_to_none=True)
            for t in range(TASKS):
                x_t = images[t].contiguous(memory_format=memory)
                (F.cross_entropy(network(x_t), labels[t]) / TASKS).backward()
            optimizer.step()
        run.parameters = list(network.parameters())
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
        run.parameters = list(network.parameters())
        return run

    if library == "learn2learn":
        maml = learn2learn_maml()(network, lr=lr, first_order=first_order)

        def run():
            optimizer.zero_grad(set_to_none=True)
            for t in range(TASKS):
                learner = maml.clone()
                for _ in range(steps):
                    learner.adapt(F.cross_entropy(learner(sx[t]), sy[t]))
                (F.cross_entropy(learner(qx[t]), qy[t]) / TASKS).backward()
            optimizer.step()
        run.parameters = list(network.parameters())
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
        run.parameters = list(network.parameters())
        return run
    raise ValueError(f"unknown library {library!r}")


def check(ways: int, config: str, libraries: list[str], tasks: int = 4) -> None:
    """Meta-gradients of every library in float64 on the first ``tasks`` tasks: max abs difference to metalab's."""
    import torch

    global TASKS
    TASKS = tasks
    torch.set_default_dtype(torch.float64)
    steps, first_order = CONFIGS[config]
    gradients = {}
    for library in libraries:
        try:
            run = step_function(library, ways, steps, first_order)
        except (ImportError, NotImplementedError) as error:
            print(f"{ways:>4} {config:>6} {library:>19}   not compared: {error}")
            continue
        run()
        gradients[library] = [p.grad.clone() for p in run.parameters]
    reference = gradients["metalab"]
    scale = max(float(g.abs().max()) for g in reference)
    for library, grads in gradients.items():
        error = max(float((a - b).abs().max()) for a, b in zip(grads, reference))
        print(f"{ways:>4} {config:>6} {library:>19}   float64 meta-gradient: max |diff to metalab| = {error:.2e} "
              f"(largest entry {scale:.2e})", flush=True)


def uses_reuse(library: str, allocator: str) -> bool:
    """Whether ``library``'s process keeps freed memory for reuse (metalab/accel/allocator.py).

    "library": as each ships (``metalab train`` / ``metalab eval`` turn it on, the peers have no such
    setting); "all": every process, peers and the plain limit included; "none": no process.
    ``metalab-default-malloc`` never does (metalab's default path beside it, for comparison).
    """
    if library == "metalab-default-malloc":
        return False
    return allocator == "all" or (allocator == "library" and library.startswith("metalab"))


def child(library: str, ways: int, config: str, iterations: int, warmup: int, threads: int,
          cpus: list[int] | None = None, allocator: str = "library") -> dict:
    import os

    import torch

    if cpus:
        os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)
    if uses_reuse(library, allocator):
        from metalab.accel.allocator import reuse_freed_memory

        reuse_freed_memory()
    steps, first_order = CONFIGS[config]
    run = step_function(library, ways, steps, first_order)
    setup_rss = rss_mb()
    times = time_calls(run, warmup, iterations)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"library": library, "ways": ways, "config": config, "median_s": statistics.median(times),
            "min_s": min(times), "times": times, "peak_rss_mb": rss_mb(), "setup_rss_mb": setup_rss,
            "reuse_freed_memory": uses_reuse(library, allocator),
            # of the whole child process (setup, warm-up and timed iterations)
            "system_s": usage.ru_stime, "user_s": usage.ru_utime, "minor_faults": usage.ru_minflt}


def interleave(libraries: list[str], ways: int, config: str, iterations: int, warmup: int, threads: int) -> dict:
    """All ``libraries`` in this one process, taking turns iteration by iteration, so that each turn's
    libraries meet the same machine speed (this CPU's speed drifts by up to 2x within minutes). Freed
    memory is kept for reuse in the whole process, the peers' iterations included (the conservative
    choice for metalab: as each library ships, only metalab's processes keep it). Prints each library's
    median and, for each peer, the median over turns of metalab's time / the peer's."""
    import torch

    from metalab.accel.allocator import reuse_freed_memory

    torch.set_num_threads(threads)
    reuse_freed_memory()
    steps, first_order = CONFIGS[config]
    runs = {library: step_function(library, ways, steps, first_order) for library in libraries}
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {library: [] for library in libraries}
    for _ in range(iterations):
        for library, run in runs.items():
            start = time.perf_counter()
            run()
            times[library].append(time.perf_counter() - start)
    result = {"ways": ways, "config": config, "interleaved": True, "times": times, "cpu": machine_description(),
              "median_s": {library: statistics.median(t) for library, t in times.items()},
              "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"{ways:>4} {config:>6}  "
          + "  ".join(f"{library} {statistics.median(t):.3f} s" for library, t in times.items()))
    if "metalab" in times:
        ratios = {library: statistics.median(m / p for m, p in zip(times["metalab"], t))
                  for library, t in times.items() if library != "metalab"}
        result["metalab_over"] = ratios
        print(f"{'':>12}median over turns of metalab / "
              + ", ".join(f"{library}: {ratio:.3f}x" for library, ratio in ratios.items()), flush=True)
    return result


def profile(library: str, ways: int, config: str, threads: int, allocator: str = "library", rows: int = 20) -> None:
    """Where one meta-iteration's time goes: torch.profiler's operators by self CPU time (after 1 warm-up)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(threads)
    if uses_reuse(library, allocator):
        from metalab.accel.allocator import reuse_freed_memory

        reuse_freed_memory()
    steps, first_order = CONFIGS[config]
    run = step_function(library, ways, steps, first_order)
    run()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiled:
        run()
    print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
    by_shape = profiled.key_averages(group_by_input_shape=True)
    print(by_shape.table(sort_by="self_cpu_time_total", row_limit=rows))
    # self CPU time by the pass an operator's input belongs to, told apart by its batch size: the
    # query sets' (QUERIES * ways images), the support sets' (ways images), everything else
    totals = {"query pass": 0.0, "support sets (inner loop)": 0.0, "other": 0.0}
    for event in by_shape:
        maps = [shape for shape in event.input_shapes if isinstance(shape, list) and len(shape) >= 2]
        batches = {shape[0] for shape in maps} | {shape[1] for shape in maps if len(shape) >= 4 and shape[0] == 64}
        kind = ("query pass" if QUERIES * ways in batches else
                "support sets (inner loop)" if SHOTS * ways in batches else "other")
        totals[kind] += event.self_cpu_time_total / 1e6
    total = sum(totals.values())
    for kind, seconds in totals.items():
        print(f"{kind:<28} {seconds:8.3f} s  {100 * seconds / total:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per round")
    parser.add_argument("--rounds", type=int, default=1,
                        help="the libraries take turns this many times (a fresh process each); times are pooled")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--libraries", nargs="+", default=LIBRARIES)
    parser.add_argument("--cpus", type=int, nargs="+", help="pin each measured process to these CPU cores")
    parser.add_argument("--json", help="append one JSON line per measurement to this file")
    parser.add_argument("--allocator", choices=["library", "all", "none"], default="library",
                        help="which processes keep freed memory for reuse (glibc thresholds): 'library' = as each "
                             "ships (metalab's train/eval do, the peers don't), 'all', or 'none'")
    parser.add_argument("--check", action="store_true",
                        help="instead of timing: compare the libraries' float64 meta-gradients on 4 tasks")
    parser.add_argument("--profile", nargs=3, metavar=("LIBRARY", "WAYS", "CONFIG"),
                        help="instead of timing: profile one meta-iteration of LIBRARY (operators by self CPU time)")
    parser.add_argument("--interleave", action="store_true",
                        help="instead of a process per library: all libraries in one process, taking turns each "
                             "iteration (same machine speed per turn; freed memory reused by all); no memory figures")
    parser.add_argument("--child", nargs=3, metavar=("LIBRARY", "WAYS", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check:
        for ways in args.ways:
            for config in args.configs:
                check(ways, config,
                      ["metalab", *[x for x in args.libraries if not x.startswith("plain") and x != "metalab"]])
        return
    if args.interleave:
        for ways in args.ways:
            for config in args.configs:
                result = interleave(args.libraries, ways, config, args.iterations, args.warmup, args.threads)
                if args.json:
                    with open(args.json, "a") as handle:
                        handle.write(json.dumps(result) + "\n")
        return
    if args.profile:
        library, ways, config = args.profile
        profile(library, int(ways), config, args.threads, args.allocator)
        return
    if args.child:
        library, ways, config = args.child
        print(json.dumps(child(library, int(ways), config, args.iterations, args.warmup, args.threads, args.cpus,
                               args.allocator)))
        return
    cpu = machine_description()
    print(f"CPU: {cpu}")
    print(f"{'ways':>4} {'config':>6} {'library':>19} {'median s':>9} {'min s':>7} {'peak MB':>8} {'growth MB':>9}")
    for ways in args.ways:
        for config in args.configs:
            libraries = [lib for lib in args.libraries if not (lib.startswith("plain") and config != args.configs[0])]
            merged: dict[str, dict] = {}
            failed: dict[str, str] = {}
            started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            # rounds: the libraries take turns, so that a change in the machine's load hits all of them alike
            for _ in range(args.rounds):
                for library in libraries:
                    if library in failed:
                        continue
                    command = [sys.executable, __file__, "--child", library, str(ways), config,
                               "--iterations", str(args.iterations), "--warmup", str(args.warmup),
                               "--threads", str(args.threads), "--allocator", args.allocator] \
                        + (["--cpus", *map(str, args.cpus)] if args.cpus else [])
                    done = subprocess.run(command, capture_output=True, text=True)
                    if done.returncode != 0:
                        failed[library] = (done.stderr.strip().splitlines() or ["failed"])[-1]
                        continue
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    if library in merged:
                        merged[library]["times"] += result["times"]
                        merged[library]["peak_rss_mb"] = max(merged[library]["peak_rss_mb"], result["peak_rss_mb"])
                        merged[library]["growth_mb"] = max(merged[library]["growth_mb"],
                                                           result["peak_rss_mb"] - result["setup_rss_mb"])
                        for counter in ("system_s", "user_s", "minor_faults"):  # summed over the rounds' processes
                            merged[library][counter] += result[counter]
                    else:
                        merged[library] = {**result, "growth_mb": result["peak_rss_mb"] - result["setup_rss_mb"]}
            for library in libraries:
                if library in failed:
                    print(f"{ways:>4} {config:>6} {library:>19}   not measured: {failed[library]}")
                    continue
                result = merged[library]
                result.update(median_s=statistics.median(result["times"]), min_s=min(result["times"]),
                              rounds=args.rounds, threads=args.threads, cpus=args.cpus, cpu=cpu,
                              measured=f"{started}-{time.strftime('%H:%M', time.gmtime())} UTC")
                print(f"{ways:>4} {config if not library.startswith('plain') else 'fwd+bwd':>6} {library:>19} "
                      f"{result['median_s']:9.3f} {result['min_s']:7.3f} {result['peak_rss_mb']:8.0f} "
                      f"{result['growth_mb']:9.0f}", flush=True)
                if args.json:
                    with open(args.json, "a") as out:
                        out.write(json.dumps(result) + "\n")

if __name__ == "__main__":
    main()
