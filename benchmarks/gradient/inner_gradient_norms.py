"""How long a trained run's inner gradients are, to choose ``learner.inner_grad_clip`` (not a test).

    python benchmarks/gradient/inner_gradient_norms.py RUN_DIR [--checkpoint PATH] [--batches 40] [--seed 20000000]

Replays the run's meta-training inner loop (its steps and fixed inner lr; plain SGD only) on ``--batches``
meta-batches of training tasks drawn from ``--seed`` (not the run's own, so none of them was trained on), one
task at a time without clipping, and prints for every inner step the median, 90th, 99th, 99.9th percentile and
maximum of the tasks' gradient L2 norms over their adapted parameters.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from metalab.data.sources import task_source
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
    if learner.loop.optimizer != "sgd" or learner.learning_rates() is not None:
        raise SystemExit("this replay covers plain SGD inner loops with a fixed inner lr (not Adam or Meta-SGD)")
    tasks = task_source(config, config.data.train_split, config.task.ways, config.task.shots, config.task.queries,
                        seed=config.train.seed, within_group=config.task.within_group)
    network, adapted = learner.network.train(), learner.adapted_names()
    start = {name: p.detach() for name, p in network.named_parameters()}
    steps, lr, size = config.learner.inner_steps, learner.loop.lr, config.task.meta_batch
    norms: list[list[float]] = [[] for _ in range(steps)]
    for index in range(args.batches):
        batch = tasks.batch(args.seed + index * size, size)
        for t in range(size):
            weights = {name: p.clone().requires_grad_(name in adapted) for name, p in start.items()}
            for step in range(steps):
                outputs = torch.func.functional_call(network, weights, (batch.support_x[t],))
                loss = learner.loss_fn(outputs[None], batch.support_y[t][None]).sum()
                grads = torch.autograd.grad(loss, [weights[name] for name in adapted])
                norms[step].append(float(torch.sqrt(sum(grad.square().sum() for grad in grads))))
                for name, grad in zip(adapted, grads):
                    weights[name] = (weights[name] - lr * grad).detach().requires_grad_()
    print(f"{args.run_dir} at step {state.get('step')}: {args.batches} x {size} tasks, inner lr {lr}")
    for step, values in enumerate(norms):
        values = np.array(values)
        print(f"  inner step {step}: median {np.median(values):.2f}  p90 {np.percentile(values, 90):.2f}  "
              f"p99 {np.percentile(values, 99):.2f}  p99.9 {np.percentile(values, 99.9):.2f}  max {values.max():.2f}")


if __name__ == "__main__":
    main()
