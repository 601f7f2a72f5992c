"""Figures of a run: for a ``tune`` run, the best score so far per trial and the fANOVA importance of
the best learner's hyperparameters over its trials; for a leave-one-dataset-out benchmark
directory, the regret curves and their summary table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from metalab.automl.space import LEARNERS
from metalab.utils.io import atomic_write, atomic_write_text


def report_tune_run(run_dir: Path) -> list[Path]:
    """``curve.png`` (best balanced accuracy so far vs trial; warm-start trials marked) and
    ``importance.png`` + ``importance.csv`` (fANOVA over the best learner's trials, when it has >= 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metalab.automl.importance import fanova_importance

    report = json.loads((run_dir / "report.json").read_text())
    trials = sorted(report["trials"], key=lambda t: t["number"])
    scores = np.array([t["score"] for t in trials])
    warm = len(report.get("enqueued", []))
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(np.arange(1, len(scores) + 1), np.maximum.accumulate(scores), label="best so far")
    axis.scatter(np.arange(1, len(scores) + 1), scores, s=10, color="grey", label="trial")
    if warm:
        axis.axvspan(0.5, warm + 0.5, color="tab:green", alpha=0.1, label=f"warm start ({report['warm_start']})")
    axis.set_xlabel("trial")
    axis.set_ylabel(report["metric"])
    axis.set_title(f"{report['task']}: best {report['best']['score']:.4f} ({report['best']['learner']})")
    axis.legend()
    figure.tight_layout()
    written = [run_dir / "curve.png"]
    atomic_write(written[0], lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)

    learner = report["best"]["learner"]
    names = [h.name for h in LEARNERS[learner].hyperparameters]
    own = [t for t in trials if t["learner"] == learner]
    if len(own) >= 4 and np.ptp([t["score"] for t in own]) > 0:
        points = np.array([[t["params"][f"u{i + 1}"] for i in range(len(names))] for t in own])
        importances = fanova_importance(points, np.array([t["score"] for t in own]), names)
        table = pd.DataFrame({"learner": learner, "hyperparameter": names,
                              "importance_mean": [importances[n] for n in names], "importance_std": 0.0,
                              "tasks": 1})
        from metalab.automl.importance import plot_importance

        atomic_write_text(run_dir / "importance.csv", table.to_csv(index=False))
        written += [run_dir / "importance.csv", plot_importance(table, run_dir / "importance.png")]
    return written


def report_benchmark(directory: Path, reference: str = "tpe") -> list[Path]:
    """``regret.png`` and ``summary.csv`` from the benchmark's ``lodo.jsonl`` rows."""
    from metalab.automl.leave_one_out import mean_curves, plot_regret, summarise

    rows = pd.read_json(directory / "lodo.jsonl", lines=True)
    curves = mean_curves(rows)
    plot_regret(curves, directory / "regret.png",
                title=f"leave-one-dataset-out, {rows.task.nunique()} tasks")
    summary = summarise(rows)
    atomic_write_text(directory / "summary.csv", summary.to_csv(index=False))
    return [directory / "regret.png", directory / "summary.csv"]


def report_run(run: str | Path) -> list[Path]:
    """Draw the figures of ``run``: a tune run (has ``report.json``) or a benchmark directory (``lodo.jsonl``)."""
    run = Path(run)
    if (run / "report.json").exists():
        return report_tune_run(run)
    if (run / "lodo.jsonl").exists():
        return report_benchmark(run)
    raise FileNotFoundError(f"{run} is neither a tune run (no report.json) nor a benchmark directory (no lodo.jsonl); "
                            "pass the directory that `metalab automl tune --out` or the benchmark wrote")
