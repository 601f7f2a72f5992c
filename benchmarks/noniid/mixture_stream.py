"""The task mixture on a stream of function families: components found vs true families (not a test).

    python benchmarks/noniid/mixture_stream.py [--steps-per-stage 150] [--meta-batch 10] --out DIR

The stream serves HSML's families one after another (sinusoid, line, quadratic, cubic; ``--steps-per-stage``
meta-batches of each, in order). The task mixture (``task-mixture``) and a single MAML train on the same stream
with the same settings; then both are scored on held-out tasks of every family (MSE after 10 inner steps) and
the mixture's MAP component of every test task is tabulated against its family. Writes ``DIR/mixture_stream.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.gradient.task_mixture import TaskMixture
from metalab.data.mixtures import HSML_FAMILIES, MixedRegressionTasks
from metalab.data.streams import TaskStream
from metalab.data.task import Task
from metalab.nn.execution import SpeedOptions
from metalab.train.evaluate import by_group, evaluate

COMMON = dict(kind="regression", backbone="mlp", mlp_hidden=[40, 40], ways=1, inner_steps=5, inner_steps_test=10,
              inner_lr=0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-per-stage", type=int, default=150)
    parser.add_argument("--meta-batch", type=int, default=10)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--test-tasks", type=int, default=800)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--spawn-share", type=float, default=0.5)
    parser.add_argument("--out", default="benchmarks/noniid")
    args = parser.parse_args()
    families = list(HSML_FAMILIES)
    stages = [MixedRegressionTasks("train", args.shots, 10, seed=0, families={f: 1.0}) for f in families]
    per_stage = args.steps_per_stage * args.meta_batch
    stream = TaskStream(stages, per_stage, families)
    test = MixedRegressionTasks("test", args.shots, 10, seed=0).fixed(args.test_tasks)
    speed = SpeedOptions(engine="reference")
    torch.manual_seed(0)  # the same initial weights in every run: the mixture's components and MAML's network
    mixture = TaskMixture(TaskMixture.Options(**COMMON, noise=args.noise, spawn_share=args.spawn_share), (1,), speed)
    torch.manual_seed(0)
    learners = {"task-mixture": mixture, "maml": MAML(MAML.Options(**COMMON), (1,), speed)}
    results: dict = {"args": vars(args), "families": families}
    for name, learner in learners.items():
        torch.manual_seed(0)
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
        start, components = time.perf_counter(), []
        for step in range(len(stream) // args.meta_batch):
            tasks = [stream.task(t) for t in range(step * args.meta_batch, (step + 1) * args.meta_batch)]
            optimizer.zero_grad()
            metrics = learner.meta_step(Task.stack(tasks))
            optimizer.step()
            if "components" in metrics and step % args.steps_per_stage == args.steps_per_stage - 1:
                components.append(int(metrics["components"]))
        seconds = time.perf_counter() - start
        result = evaluate(learner, test, batch_size=100)
        entry = {"train_seconds": seconds, "overall": result.as_dict(),
                 "families": by_group(result, test.groups(), test.names)}
        if isinstance(learner, TaskMixture):
            entry["components_after_each_stage"] = components
            assignments = torch.cat([learner.assignments(b) for b in test.batches(100)])
            groups = test.groups()
            entry["assignment_counts"] = {family: torch.bincount(assignments[groups == f],
                                                                 minlength=int(learner.active)).tolist()
                                          for f, family in enumerate(families)}
        results[name] = entry
        print(name, f"{seconds:.0f} s", result, json.dumps(entry.get("assignment_counts")),
              json.dumps(entry["families"]), flush=True)
    (Path(args.out) / "mixture_stream.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
