"""Figures of a search: the derived cells as graphs, and the architecture weights over the search (matplotlib).

``plot_genotype`` draws the normal and the reduction cell side by side: the two cell inputs c_{k-2} and c_{k-1}
on the left, the intermediate nodes, the output c_k on the right, each kept edge an arrow labelled with its
operation. ``plot_alpha_history`` draws, per cell kind, each operation's softmax weight averaged over the
cell's edges against the search step (from ``history.jsonl``); ``plot_meta_alpha`` the same for a MetaNAS
run against the meta-step (from the ``alpha/<cell>/<operation>`` metrics of its ``metrics.jsonl``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metalab.nas.genotype import Edge, Genotype


def _figure(columns: int, width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, columns, figsize=(width * columns, height), squeeze=False)
    return figure, axes[0]


def _save(figure: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(figure)
    return path


def _draw_cell(axis: Any, edges: list[list[Edge]], concat: Sequence[int], title: str) -> None:
    nodes = len(edges)
    position = {0: (0.0, 0.75), 1: (0.0, 0.25)}
    for i in range(nodes):  # zig-zag, so that no edge passes through a node
        position[i + 2] = (1.0 + i, 0.85 - 0.05 * (i // 2) if i % 2 == 0 else 0.2 + 0.05 * (i // 2))
    output = (nodes + 1.0, 0.5)
    names = {0: "c_{k-2}", 1: "c_{k-1}", **{i + 2: str(i) for i in range(nodes)}}
    box = {"boxstyle": "round", "facecolor": "#dde8f5", "edgecolor": "#333333"}
    for node, kept in enumerate(edges):
        for op, source in kept:
            start, end = position[source], position[node + 2]
            axis.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "#555555",
                                                                "shrinkA": 14, "shrinkB": 14})
            middle = (start[0] + 0.4 * (end[0] - start[0]), start[1] + 0.4 * (end[1] - start[1]))
            axis.text(*middle, op, fontsize=7, ha="center", va="center", color="#a0301c",
                      bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5})
    for node in concat:
        axis.annotate("", xy=output, xytext=position[node], arrowprops={"arrowstyle": "->", "color": "#bbbbbb",
                                                                        "shrinkA": 14, "shrinkB": 14})
    for key, (x, y) in position.items():
        axis.text(x, y, names[key], ha="center", va="center", fontsize=9, bbox=box)
    axis.text(*output, "c_k", ha="center", va="center", fontsize=9, bbox={**box, "facecolor": "#f5e6c8"})
    axis.set_xlim(-0.5, nodes + 1.5)
    axis.set_ylim(0.0, 1.0)
    axis.set_title(title)
    axis.axis("off")


def plot_genotype(genotype: Genotype, path: str | Path, title: str = "") -> Path:
    """The normal and the reduction cell of ``genotype`` as graphs, one PNG."""
    figure, axes = _figure(2, 1.6 * (genotype.nodes + 2), 3.6)
    _draw_cell(axes[0], genotype.normal, genotype.normal_concat, f"{title} normal cell".strip())
    _draw_cell(axes[1], genotype.reduce, genotype.reduce_concat, f"{title} reduction cell".strip())
    return _save(figure, path)


def plot_alpha_history(history: list[dict[str, Any]], operations: Sequence[str], path: str | Path) -> Path:
    """Each operation's softmax(alpha), averaged over a cell's edges, against the step; plus the validation
    accuracy of the one-shot network."""
    import numpy as np

    figure, axes = _figure(3, 4.2, 3.4)
    steps = [entry["step"] for entry in history]
    for axis, key, title in ((axes[0], "alpha_normal", "normal cell"), (axes[1], "alpha_reduce", "reduction cell")):
        weights = np.array([entry[key] for entry in history])  # [records, E, O]
        for o, name in enumerate(operations):
            axis.plot(steps, weights[:, :, o].mean(axis=1), label=name)
        axis.set_xlabel("search step")
        axis.set_ylabel("mean softmax(alpha) over edges")
        axis.set_title(title)
    axes[1].legend(fontsize=7)
    axes[2].plot(steps, [entry["val_accuracy"] for entry in history], marker=".")
    axes[2].set_xlabel("search step")
    axes[2].set_ylabel("validation accuracy (one-shot network)")
    axes[2].set_title("search")
    return _save(figure, path)


def plot_meta_alpha(records: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Each operation's softmax(meta-alpha), averaged over a cell's edges, against the meta-step, from the training
    records of a MetaNAS run (None if they hold no ``alpha/...`` metrics, e.g. a run from before they were
    logged)."""
    train = [r for r in records if r.get("kind") == "train" and any(k.startswith("alpha/") for k in r)]
    if not train:
        return None
    figure, axes = _figure(2, 4.2, 3.4)
    steps = [r["step"] for r in train]
    for axis, kind in zip(axes, ("normal", "reduce")):
        prefix = f"alpha/{kind}/"
        for key in sorted(k for k in train[-1] if k.startswith(prefix)):
            axis.plot(steps, [r.get(key, float("nan")) for r in train], label=key[len(prefix):])
        axis.set_xlabel("meta-step")
        axis.set_ylabel("mean softmax(alpha) over edges")
        axis.set_title(f"{title} {'normal' if kind == 'normal' else 'reduction'} cell".strip())
    axes[1].legend(fontsize=7)
    return _save(figure, path)
