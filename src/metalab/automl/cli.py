"""The ``metalab automl ...`` commands: build-metadataset, data, recommend, tune, report, importance."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

METADATASET_ENV = "METALAB_AUTOML_METADATASET"


def default_metadataset_path() -> Path:
    """``$METALAB_AUTOML_METADATASET``, else ``<data root>/automl/metadataset.sqlite``."""
    from metalab.data.store import resolve_data_root

    explicit = os.environ.get(METADATASET_ENV)
    return Path(explicit) if explicit else resolve_data_root() / "automl" / "metadataset.sqlite"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def cmd_build(args: argparse.Namespace) -> int:
    from metalab.automl.metadataset import BuildPlan, build_metadataset, describe_metadataset, plan_tasks

    out = Path(args.out) if args.out else default_metadataset_path()
    print(f"selecting tasks (rules in metalab.automl.sources) ...", flush=True)
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


def add_automl_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``metalab automl`` and its verbs on the top-level parser's sub-parsers."""
    automl = sub.add_parser("automl", help="meta-learning for AutoML: meta-dataset, recommend, tune, report")
    verbs = automl.add_subparsers(dest="automl_command", required=True)

    p = verbs.add_parser("build-metadataset", help="build or resume the meta-dataset (resumable, with progress)")
    p.add_argument("--out", help=f"SQLite file (default: ${METADATASET_ENV}, else <data root>/automl/metadataset.sqlite)")
    p.add_argument("--jobs", type=positive_int, default=1, help="processes evaluating tasks")
    p.add_argument("--tasks", type=positive_int, help="only the first N selected tasks (a small meta-dataset)")
    p.add_argument("--per-learner", type=positive_int, help="design points per learner (default: each learner's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_build)

    p = verbs.add_parser("data", help="what meta-dataset is built, and where")
    p.add_argument("--metadataset", help="SQLite file (default: the build's default)")
    p.set_defaults(func=cmd_data)
