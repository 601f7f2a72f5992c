"""Plots of meta-RL runs, drawn by ``metalab plot RUN`` and at the end of training.

- 2D navigation: the trajectories of the first test tasks before adaptation and after each gradient step
  (MAML-RL), in the first and last episode of a trial (RL^2) or after each episode of context (PEARL), with the
  goal (the MAML paper's figure 4),
  ``<run>/trajectories.png``;
- every run: the test return against the stage of adaptation (steps, or episodes of the trial), mean +- 95% CI,
  from ``results.json``, ``<run>/adaptation.png``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from metalab.algorithms.base import MetaLearner
from metalab.envs.tasks import EnvTaskBatch
from metalab.train.plots import panels, task_panels


def trajectories(learner: Any, batch: EnvTaskBatch) -> list[tuple[str, torch.Tensor]]:
    """(label, positions [T, H, 2] of one episode per task) for each stage of adaptation the learner has."""
    if hasattr(learner, "context_rollouts"):  # PEARL: after 0, 1, ... episodes of context
        return [(f"{k} context episode{'s' if k != 1 else ''}", r.observations[:, 0, :, :2])
                for k, r in enumerate(learner.context_rollouts(batch))]
    if hasattr(learner, "rollouts"):  # gradient-based: after 0, 1, ..., eval_steps steps
        stages = learner.rollouts(batch, learner.options.eval_steps, batch.queries)
        return [(f"{k} step{'s' if k != 1 else ''}" if k else "pre-update", r.observations[:, 0, :, :2])
                for k, r in enumerate(stages)]
    rollouts, _ = learner.trials(batch)  # RL^2: the episodes of one trial
    episode = torch.cumsum(rollouts.dones, -1) - rollouts.dones
    horizon = batch.family.horizon
    picked = []
    for label, number in (("first episode", 0), ("last episode", batch.shots - 1)):
        steps = (episode[:, 0] == number).float().argmax(-1)  # each task's first step of that episode
        picked.append((label, torch.stack([rollouts.observations[t, 0, int(s):int(s) + horizon, :2]
                                           for t, s in enumerate(steps)])))
    return picked


def plot_navigation(learner: MetaLearner, batch: EnvTaskBatch, path: str | Path) -> Path:
    """One panel per task of ``batch``: its goal and the learner's trajectory at each stage of adaptation."""
    stages = trajectories(learner, batch)
    with task_panels(learner, len(batch), path, dpi=110) as axes:
        for t, axis in enumerate(axes):
            for k, (label, positions) in enumerate(stages):
                path_t = torch.cat([torch.zeros(1, 2), positions[t].detach().cpu()])
                axis.plot(path_t[:, 0], path_t[:, 1], "-", color=f"C{k}", label=label, linewidth=1.2)
            goal = batch.tasks[t]["goal"]
            axis.plot([goal[0]], [goal[1]], "*", color="k", markersize=12, label="goal")
            axis.set(xlim=(-0.6, 0.6), ylim=(-0.6, 0.6), aspect="equal", title=f"test task {t}")
        axes[0].legend(fontsize=7, loc="lower left")
    return Path(path)


def plot_adaptation(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """The test return at each stage of adaptation, mean +- 95% CI, from ``<run>/results.json``."""
    results = Path(run_dir) / "results.json"
    if not results.is_file():
        raise FileNotFoundError(f"{results} does not exist: the run has not finished its test yet (metalab train "
                                f"writes it at the end)")
    summary = json.loads(results.read_text())
    test = summary["test"]
    stages = {name: values for name, values in test.get("stages", {}).items()}
    steps = sorted((int(name.split("_")[1]), values) for name, values in stages.items() if name.startswith("return_"))
    if steps:  # gradient steps 0 .. K-1, then the headline after K
        labels = [str(k) for k, _ in steps] + [str(len(steps))]
        values = [v for _, v in steps] + [[test["mean"], test["ci95"]]]
        # PEARL adapts by inferring its latent from episodes of context, the others by gradient steps
        xlabel = "episodes of context at test" if summary.get("learner") == "pearl" else "gradient steps at test"
    else:
        named = [(name.replace("_", " "), values) for name, values in stages.items()]
        labels = [name for name, _ in named] + ["trial"]
        values = [v for _, v in named] + [[test["mean"], test["ci95"]]]
        xlabel = "return of"
    out = Path(path) if path else Path(run_dir) / "adaptation.png"
    with panels(1, out, dpi=110) as (axis,):
        axis.errorbar(range(len(values)), [v[0] for v in values], yerr=[v[1] for v in values], fmt="o-", capsize=3)
        axis.set_xticks(range(len(values)), labels)
        axis.set(xlabel=xlabel, ylabel="return (mean +- 95% CI)", title=f"{test['episodes']} test tasks")
    return out
