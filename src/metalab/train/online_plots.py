"""The learning-efficiency plot of an online run (Finn et al. 2019, figure 3's metric): per task index of the
stream, the datapoints each method needed to reach the target accuracy, and its accuracy after all of them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: how the plot names the methods of :mod:`metalab.train.online`
LABELS = {"ftml": "FTML", "ftl": "FTL (joint training + fine-tuning)", "toe": "TOE (train on everything)",
          "tfs": "TFS (train from scratch)"}


def plot_efficiency(results: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Draw ``results`` (the ``results.json`` of ``metalab online``) to ``path``: left, datapoints to reach
    ``results["target"]`` per task index (a task that never reached it sits on the top line, N + n); right, the
    accuracy after all N datapoints. Dotted lines separate the stream's stages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cap = results["max_data"] + results["arrival"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method, values in results["methods"].items():
        records = values["tasks"]
        label = LABELS.get(method, method)
        left.plot([r["task"] for r in records], [r["efficiency"] or cap for r in records], "o-", label=label)
        right.plot([r["task"] for r in records], [r["final_accuracy"] for r in records], "o-", label=label)
    left.axhline(cap, color="grey", lw=0.5)
    left.set_ylim(0, cap * 1.05)
    left.set(xlabel="task index in the stream",
             ylabel=f"datapoints to reach {results['target']:.0%} (top line: not reached)",
             title="learning efficiency (lower is better)")
    right.set(xlabel="task index in the stream", ylabel="accuracy after all N datapoints", title="final accuracy")
    stages = results.get("stages", [])
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        for index in range(1, len(stages)):
            if stages[index] != stages[index - 1]:
                axis.axvline(index - 0.5, color="grey", ls=":", lw=0.7)
    left.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_online_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """``metalab plot RUN`` of an online run: :func:`plot_efficiency` of its results.json (the tasks done so far
    while it runs), to ``<run>/efficiency.png`` unless ``out`` names another file."""
    results = Path(run_dir) / "results.json"
    if not results.is_file():
        raise FileNotFoundError(f"{results} does not exist: the run has not finished its first task yet "
                                f"(`metalab online` writes it after every task)")
    data = json.loads(results.read_text())
    title = f"{data['recipe']}: {data['tasks_done']} of {data['tasks']} tasks"
    return plot_efficiency(data, out or Path(run_dir) / "efficiency.png", title)
