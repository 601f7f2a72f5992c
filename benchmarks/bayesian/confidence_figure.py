"""The figure a user reads at a glance: for a few test episodes of a run, each query image with the class the
learner predicts and how sure it is; wrong answers framed in red, thick where the learner was confident.

    python benchmarks/bayesian/confidence_figure.py RUN [RUN ...] --out FIGURE.png [--episodes 2] [--queries 8]

One row per (run, episode): the support images (one per class, labelled 0..W-1) then the first queries, each
titled "predicted class (probability)" from the learner's predictive distribution (``predictive_distribution``).
The data root comes from METALAB_DATA.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from metalab.data.sources import evaluation_episodes
from metalab.train.build import load_run

#: a wrong answer given with at least this probability is "confidently wrong" (thick red frame)
CONFIDENT = 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--queries", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        learner, config, _ = load_run(run)
        learner.eval()
        episodes = evaluation_episodes(config, config.data.test_split, episodes=args.episodes)
        batch = next(iter(episodes.batches(args.episodes)))
        with torch.no_grad():
            probabilities = learner.predictive_distribution(batch).probs.float()
        for t in range(args.episodes):
            rows.append((Path(run).name, t, batch[t], probabilities[t]))
    ways = int(rows[0][2].support_y.max()) + 1
    columns = ways + args.queries
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns, 1.45 * len(rows)), squeeze=False)
    for row, (name, episode, task, probabilities) in zip(axes, rows):
        order = torch.randperm(len(task.query_y), generator=torch.Generator().manual_seed(episode))[:args.queries]
        for k in range(ways):
            image = task.support_x[task.support_y == k][0, 0]
            row[k].imshow(image, cmap="gray_r" if float(image.mean()) < 0.5 else "gray")
            row[k].set_title(f"class {k}", fontsize=7)
        for axis, index in zip(row[ways:], order.tolist()):
            image = task.query_x[index, 0]
            axis.imshow(image, cmap="gray_r" if float(image.mean()) < 0.5 else "gray")
            confidence, predicted = probabilities[index].max(-1)
            right = int(predicted) == int(task.query_y[index])
            axis.set_title(f"{int(predicted)} ({float(confidence):.2f})", fontsize=7,
                           color="black" if right else "red")
            if not right:
                for spine in axis.spines.values():
                    spine.set(edgecolor="red", linewidth=3 if float(confidence) >= CONFIDENT else 1)
        row[0].set_ylabel(f"{name}\nepisode {episode}", fontsize=7)
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle(f"support (one per class) | queries: predicted class (probability); red = wrong, thick red = "
                    f"wrong with probability >= {CONFIDENT}", fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
