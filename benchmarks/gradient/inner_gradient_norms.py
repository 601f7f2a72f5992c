"""How long a trained run's inner gradients are, to choose ``learner.inner_grad_clip`` (not a test).

    python benchmarks/gradient/inner_gradient_norms.py RUN_DIR [--checkpoint PATH] [--batches 40] [--seed 20000000]

Replays the run's meta-training inner loop (its steps and fixed inner lr; plain full-batch SGD only) on
``--batches`` meta-batches of training tasks drawn from ``--seed`` (not the run's own, so none of them was trained
on), with the inner loop's own gradients, unclipped, and prints for every inner step the median, 90th, 99th and
99.9th percentile and maximum of the tasks' gradient L2 norms over their adapted parameters.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from metalab.data.sources import task_source
from metalab.nn.inner_loop import SGD, InnerLoop, expand_for_tasks, task_gradient_norms, task_loss
from metalab.train.build import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default=None, help="default: the run's best.pt, else last.pt")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--seed", type=int, default=20_000_000, help="first task index of the replayed tasks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    learner, config, state = load_run(args.run_dir, checkpoint=args.checkpoint)
    rule = learner.update_rule(training=True)
    if not isinstance(rule, SGD) or getattr(config.learner, "inner_batch", 0):
        raise SystemExit("this replay covers full-batch SGD inner loops with a fixed inner lr "
                         "(not Adam, Meta-SGD's learned rates or support minibatches)")
    tasks = task_source(config, config.data.train_split, config.task.ways, config.task.shots, config.task.queries,
                        seed=config.train.seed, within_group=config.task.within_group)
    network, adapted = learner.network.train(), learner.adapted_names()
    params = {name: p.detach() for name, p in network.named_parameters()}
    steps, lr, size = config.learner.inner_steps, rule.lr, config.task.meta_batch
    unclipped = InnerLoop(steps=steps, rule=rule)  # the learner's loop without its clip

    def forward(params, x):
        return learner.network_forward(params, x, training=True, inner=True)
    norms: list[list[float]] = [[] for _ in range(steps)]
    for index in range(args.batches):
        batch = tasks.batch(args.seed + index * size, size)
        fast = {name: value.clone().requires_grad_() if name in adapted else value
                for name, value in expand_for_tasks(params, adapted, size).items()}
        for step in range(steps):
            # the inner loop's own gradients (all tasks of the meta-batch at once), unclipped
            grads = unclipped.gradients(forward, fast, batch.support_x, batch.support_y, adapted,
                                        task_loss(learner.loss_fn), create_graph=False)
            norms[step] += task_gradient_norms(grads).tolist()
            for name, grad in zip(adapted, grads):
                fast[name] = (fast[name] - lr * grad).detach().requires_grad_()
    print(f"{args.run_dir} at step {state.get('step')}: {args.batches} x {size} tasks, inner lr {lr}")
    for step, values in enumerate(norms):
        values = np.array(values)
        print(f"  inner step {step}: median {np.median(values):.2f}  p90 {np.percentile(values, 90):.2f}  "
              f"p99 {np.percentile(values, 99):.2f}  p99.9 {np.percentile(values, 99.9):.2f}  max {values.max():.2f}")


if __name__ == "__main__":
    main()
