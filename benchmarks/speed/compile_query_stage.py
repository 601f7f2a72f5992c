"""torch.compile as a speed lever: the query stage of a MAML meta-iteration, eager vs compiled.

The query stage (:func:`metalab.accel.two_stage_backward.backward_through_adaptation`, stage 1) is a plain
first-order forward+backward of each task's queries at its adapted weights, the half of a
meta-iteration that holds the most work and the only part a compiled (once-differentiable) graph
can take: the inner loop needs double backward, which AOTAutograd does not compile. This script
adapts 32 tasks once (same weights and tasks as meta_iteration.py), then times the query stage of
all 32 tasks with the query loss run eagerly and through ``torch.compile`` (inductor, static
shapes), in one process, taking turns; it prints the compile time, the largest difference of the
query gradients (float32) and the graph count.

    .venv/bin/python benchmarks/speed/compile_query_stage.py [--ways 5] [--threads 2] [--rounds 3] [--profile]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meta_iteration import TASKS, setup, time_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="eager and compiled take turns this many times")
    parser.add_argument("--iterations", type=int, default=2, help="timed query stages per turn")
    parser.add_argument("--profile", action="store_true",
                        help="then profile one query stage each way (operators by self CPU time)")
    args = parser.parse_args()

    import torch

    from metalab.accel.two_stage_backward import backward_through_adaptation
    from metalab.algorithms.gradient.maml import MAML

    torch.set_num_threads(args.threads)
    network, support_x, support_y, query_x, query_y = setup(args.ways)
    learner = MAML(MAML.Options(name="maml", ways=args.ways, inner_steps=1, inner_lr=0.4), (1, 28, 28))
    learner.network.load_state_dict(network.state_dict())
    names = learner.adapted_names()
    adapted = learner.adapt_tasks(support_x, support_y, training=True)
    # fresh leaves: stage 2 then only accumulates the query gradients into them (no inner-loop graph)
    fast = {name: value.detach().requires_grad_() for name, value in adapted.items()}

    def loss_of(params: dict, x, y):
        outputs = learner.query_outputs(params, x, training=True)
        return learner.loss_fn(outputs, y).sum() / TASKS, outputs

    compiled = torch.compile(loss_of, dynamic=False)

    def query_stage(function) -> dict:
        for value in fast.values():
            value.grad = None

        def query_loss(params: dict, start: int, stop: int):
            return function(params, query_x[start:stop], query_y[start:stop])

        backward_through_adaptation(fast, names, query_loss, TASKS)
        return {name: fast[name].grad.clone() for name in names}

    eager_grads = query_stage(loss_of)
    start = time.perf_counter()
    compiled_grads = query_stage(compiled)
    compile_s = time.perf_counter() - start
    difference = max((eager_grads[n] - compiled_grads[n]).abs().max().item() for n in names)
    scale = max(eager_grads[n].abs().max().item() for n in names)
    print(f"{args.ways}-way, {TASKS} tasks: first compiled query stage (compilation included) {compile_s:.1f} s; "
          f"query gradients: max |eager - compiled| = {difference:.2e} (largest entry {scale:.3g})")
    eager_times, compiled_times = [], []
    for _ in range(args.rounds):
        eager_times += time_calls(lambda: query_stage(loss_of), 0, args.iterations)
        compiled_times += time_calls(lambda: query_stage(compiled), 0, args.iterations)
    eager_s, compiled_s = statistics.median(eager_times), statistics.median(compiled_times)
    print(f"query stage of {TASKS} tasks, median of {len(eager_times)}: eager {eager_s:.3f} s, "
          f"compiled {compiled_s:.3f} s (compiled / eager {compiled_s / eager_s:.2f}); "
          f"eager {[round(t, 3) for t in eager_times]}, compiled {[round(t, 3) for t in compiled_times]}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for label, function in (("eager", loss_of), ("compiled", compiled)):
            with profile(activities=[ProfilerActivity.CPU]) as profiled:
                query_stage(function)
            print(f"{label}:\n" + profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    # after the timing: explain() traces anew, and the compiled function would recompile after it
    explained = torch._dynamo.explain(loss_of)({n: fast[n][:1] for n in names}, query_x[:1], query_y[:1])
    print(f"graphs {explained.graph_count}, graph breaks {explained.graph_break_count}")


if __name__ == "__main__":
    main()
