"""The ``metalab automl ...`` commands: build-metadataset, data, recommend, tune, report, importance."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from metalab.cli import count_of_at_least_one

METADATASET_ENV = "METALAB_AUTOML_METADATASET"


def default_metadataset_path() -> Path:
    """``$METALAB_AUTOML_METADATASET``, else ``<data root>/automl/metadataset.sqlite``."""
    from metalab.data.store import resolve_data_root

    explicit = os.environ.get(METADATASET_ENV)
    return Path(explicit) if explicit else resolve_data_root() / "automl" / "metadataset.sqlite"


def cmd_build(args: argparse.Namespace) -> int:
    from metalab.automl.metadataset import BuildPlan, build_metadataset, describe_metadataset, plan_tasks

    out = Path(args.out) if args.out else default_metadataset_path()
    print("selecting tasks (rules in metalab.automl.sources) ...", flush=True)
    tasks = plan_tasks(limit=args.tasks, seed=args.seed)
    plan = BuildPlan([t.name for t in tasks], seed=args.seed, per_learner=args.per_learner)
    print(f"{len(tasks)} tasks x {len(plan.configurations())} configurations x {plan.folds} folds -> {out}", flush=True)
    build_metadataset(out, plan, jobs=args.jobs, progress=not args.no_progress)
    print(describe_metadataset(out))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from metalab.automl.metadataset import describe_metadataset

    print(describe_metadataset(args.metadataset or default_metadataset_path()))
    return 0


def load_user_task(args: argparse.Namespace):
    from metalab.automl.table import classification_task, read_table

    return classification_task(read_table(args.table), args.target, name=Path(args.table).name)


def cmd_recommend(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from metalab.automl.metadataset import load_metadataset
    from metalab.automl.metafeatures import metafeatures
    from metalab.automl.selection import ConfigurationRanker, LearnerSelector
    from metalab.automl.warmstart import nearest_tasks

    task = load_user_task(args)
    meta = load_metadataset(args.metadataset or default_metadataset_path())
    features = pd.Series(metafeatures(task.x, task.y))
    ranker = ConfigurationRanker.fit(meta)
    predicted = ranker.predict(features)
    order = ranker.ranking(features)[: args.top]
    learner = LearnerSelector.fit(meta).predict(features)
    neighbours = nearest_tasks(meta.metafeatures, features, 3)
    rows: list[dict[str, Any]] = [
        {"rank": r + 1, "configuration": meta.configurations[i].id, "learner": meta.configurations[i].learner,
         "values": meta.configurations[i].values, "predicted_balanced_accuracy": float(predicted[i])}
        for r, i in enumerate(order)]
    if args.json:
        print(json.dumps({"best_learner": learner, "nearest_tasks": neighbours, "configurations": rows}, default=str))
        return 0
    print(f"{task.name}: {len(task.y)} rows, {task.x.shape[1]} features, {task.classes} classes")
    print(f"predicted best learner: {learner}; nearest known tasks: "
          + ", ".join(f"{name} ({distance:.1f})" for name, distance in neighbours))
    print(f"{'rank':>4}  {'configuration':16s} {'predicted':>9}  values")
    for row in rows:
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["values"].items())
        print(f"{row['rank']:>4}  {row['configuration']:16s} {row['predicted_balanced_accuracy']:9.4f}  {values}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from metalab.automl.metadataset import load_metadataset
    from metalab.automl.tune import tune

    task = load_user_task(args)
    meta = None if args.warm_start == "none" else load_metadataset(args.metadataset or default_metadataset_path())
    out = Path(args.out) if args.out else Path("runs") / f"automl-{Path(args.table).stem}"
    result = tune(task, out, args.trials, args.warm_start, meta, storage=args.storage, study_name=args.study,
                  seed=args.seed)
    print(f"best balanced accuracy {result.best_score:.4f} ({result.trials} trials): {result.best_learner} "
          f"{result.best_values}")
    print(f"model: {out / 'model.joblib'}  report: {out / 'report.json'}  (figures: metalab automl report {out})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from metalab.automl.report import report_run

    for path in report_run(args.run):
        print(path)
    return 0


def cmd_importance(args: argparse.Namespace) -> int:
    from metalab.automl.defaults import tunability
    from metalab.automl.importance import importance_table, plot_importance
    from metalab.automl.metadataset import load_metadataset
    from metalab.utils.io import atomic_write_text

    meta = load_metadataset(args.metadataset or default_metadataset_path())
    table = importance_table(meta)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    print(tunability(meta).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        out = Path(args.out)
        atomic_write_text(out.with_suffix(".csv"), table.to_csv(index=False))
        print(plot_importance(table, out.with_suffix(".png")))
    return 0


def add_automl_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``metalab automl`` and its verbs on the top-level parser's sub-parsers."""
    automl = sub.add_parser("automl", help="meta-learning for AutoML: meta-dataset, recommend, tune, report")
    verbs = automl.add_subparsers(dest="automl_command", required=True)

    p = verbs.add_parser("build-metadataset", help="build or resume the meta-dataset (resumable, with progress)")
    p.add_argument("--out",
                   help=f"SQLite file (default: ${METADATASET_ENV}, else <data root>/automl/metadataset.sqlite)")
    p.add_argument("--jobs", type=count_of_at_least_one, default=1, help="processes evaluating tasks")
    p.add_argument("--tasks", type=count_of_at_least_one, help="only the first N selected tasks (a small meta-dataset)")
    p.add_argument("--per-learner", type=count_of_at_least_one,
                   help="design points per learner (default: each learner's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_build)

    p = verbs.add_parser("data", help="what meta-dataset is built, and where")
    p.add_argument("--metadataset", help="SQLite file (default: the build's default)")
    p.set_defaults(func=cmd_data)

    p = verbs.add_parser("recommend",
                         help="zero-shot: the configurations to try first on a table, with predicted scores")
    p.add_argument("table", help="CSV file with a header row")
    p.add_argument("--target", required=True, help="the column of class labels")
    p.add_argument("--top", type=count_of_at_least_one, default=10)
    p.add_argument("--metadataset")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recommend)

    p = verbs.add_parser("tune", help="tune a table with warm-started Optuna; saves the best model and a report")
    p.add_argument("table", help="CSV file with a header row")
    p.add_argument("--target", required=True, help="the column of class labels")
    p.add_argument("--trials", type=count_of_at_least_one, default=30, help="completed trials of the study in total")
    p.add_argument("--warm-start", default="knn",
                   choices=["knn", "portfolio", "portfolio-pmf", "metafeature-pmf", "none"],
                   help="knn: best configurations of the nearest tasks; portfolio: the greedy portfolio; "
                        "portfolio-pmf: the portfolio's first members then PMF + EI, one trial at a time; "
                        "metafeature-pmf: the same with PMF's prior predicted from the table's meta-features; "
                        "then TPE")
    p.add_argument("--out", help="run directory (default: runs/automl-<table name>)")
    p.add_argument("--storage", help="Optuna storage URL shared by several processes (default: <out>/study.db)")
    p.add_argument("--study", help="study name in the storage (default: the run directory's name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metadataset")
    p.set_defaults(func=cmd_tune)

    p = verbs.add_parser("report", help="figures of a tune run or a benchmark directory (PNG)")
    p.add_argument("run")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("importance", help="fANOVA hyperparameter importance and tunability per learner")
    p.add_argument("--metadataset")
    p.add_argument("--out", help="write OUT.csv and OUT.png")
    p.set_defaults(func=cmd_importance)
