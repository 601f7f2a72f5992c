"""The ambiguity figure of the PLATIPUS paper (section 6) for trained runs (not a test): on ambiguous tasks, whose
5 support points both a sinusoid and a line explain, the functions of the learner's posterior samples, and how
often the samples cover both explanations.

A sample "explains" the sinusoid (the line) when its function is nearer, in mean squared distance over x in
[-5, 5], to the task's sinusoid than to its line (and vice versa). Over ``--tasks`` ambiguous test tasks the script
prints, per run, the share of tasks whose samples include both kinds and the mean share of samples nearer the line.
A blend halfway between the two counts for one of them by that rule, so a stricter share is printed beside it:
a sample is "on" an explanation when its mean squared distance to it is under a quarter of the mean squared distance
between the sinusoid and the line (its RMS distance under half theirs), and ``tasks_with_both_on`` counts the tasks
with a sample on each.

Usage: python benchmarks/bayesian/ambiguity.py RUN [RUN ...] --out benchmarks/bayesian/ambiguity.png
"""
from __future__ import annotations

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from metalab.data.ambiguous import sinusoid
from metalab.data.regression import regression_source
from metalab.data.task import Task
from metalab.train.build import load_run

GRID = torch.linspace(-5, 5, 201).unsqueeze(1)


def sample_functions(learner, task: Task, samples: int) -> np.ndarray:
    """The posterior samples' functions on the grid given the task's support set: [S, G]."""
    if hasattr(learner.options, "samples"):  # BMAML's samples are its particles
        learner.options.samples = samples
    batch = Task.stack([Task(task.support_x, task.support_y, GRID, torch.zeros_like(GRID))])
    return learner.sample_outputs(batch).detach()[0, :, :, 0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default="ambiguity.png")
    parser.add_argument("--tasks", type=int, default=100, help="ambiguous test tasks for the coverage shares")
    parser.add_argument("--panels", type=int, default=4, help="tasks plotted per run")
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    tasks = regression_source("ambiguous", "test", shots=5, queries=1, seed=0)
    x = GRID[:, 0].numpy()
    figure, axes = plt.subplots(len(args.runs), args.panels, figsize=(3.2 * args.panels, 2.8 * len(args.runs)),
                                squeeze=False)
    for row, run in enumerate(args.runs):
        learner, config, _ = load_run(run)
        learner.eval()
        torch.manual_seed(0)
        both, both_on, line_share = [], [], []
        for index in range(args.tasks):
            function = tasks.function(index)
            curves = sample_functions(learner, tasks.task(index), args.samples)
            true_sin, true_line = sinusoid(function, x), function["slope"] * x + function["intercept"]
            to_line, to_sin = ((curves - true_line) ** 2).mean(1), ((curves - true_sin) ** 2).mean(1)
            nearer_line = to_line < to_sin
            both.append(bool(nearer_line.any() and (~nearer_line).any()))
            gap = ((true_sin - true_line) ** 2).mean()
            both_on.append(bool((to_line < gap / 4).any() and (to_sin < gap / 4).any()))
            line_share.append(float(nearer_line.mean()))
            if index < args.panels:
                axis = axes[row, index]
                axis.plot(x, curves.T, color="C0", lw=0.8, alpha=0.6)
                axis.plot(x, true_sin, "k--", lw=1, label="sinusoid")
                axis.plot(x, true_line, "k:", lw=1.2, label="line")
                task = tasks.task(index)
                axis.scatter(task.support_x[:, 0], task.support_y[:, 0], c="C3", s=25, zorder=3, label="support")
                axis.set_ylim(-7, 7)
                axis.set_title(f"{config.learner.name}: task {index}", fontsize=9)
                if index == 0:
                    axis.legend(fontsize=7, loc="lower left")
        print(json.dumps({"run": run, "learner": config.learner.name, "tasks": args.tasks,
                          "tasks_with_both": float(np.mean(both)), "tasks_with_both_on": float(np.mean(both_on)),
                          "mean_share_nearer_line": float(np.mean(line_share))}))
    figure.suptitle("posterior samples (blue) on ambiguous tasks: 5 support points (red) fit a sinusoid and a line")
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
