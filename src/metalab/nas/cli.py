"""The ``metalab nas ...`` commands: presets, search (cold or warm-started), and the figures of a search run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_presets(args: argparse.Namespace) -> int:
    from metalab.nas.search import load_config, preset_names

    for name in preset_names():
        print(f"{name:24s} {load_config(name).description}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from metalab.nas.search import load_config, run_search

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data_root={args.data_root}")
    config = load_config(args.preset, overrides)
    result = run_search(config, warm_start_run=args.warm_start)
    run_dir = Path(config.run_dir or Path("runs") / "nas" / config.name)
    print(json.dumps(result) if args.json else
          "\n".join(f"{key}: {value}" for key, value in result.items()) + f"\nrun: {run_dir}")
    return 0


def plot_search_run(run: str | Path) -> list[Path]:
    """``<run>/cell.png`` (the derived cells) and ``<run>/alpha.png`` (alpha and validation accuracy over time)."""
    from omegaconf import OmegaConf

    from metalab.nas.genotype import Genotype
    from metalab.nas.plots import plot_alpha_history, plot_genotype
    from metalab.nas.search import CONFIG, GENOTYPE, read_history

    run = Path(run)
    history = read_history(run)
    operations = list(OmegaConf.load(run / CONFIG).space.operations)
    paths = [plot_alpha_history(history, operations, run / "alpha.png")]
    if (run / GENOTYPE).is_file():
        paths.insert(0, plot_genotype(Genotype.load(run / GENOTYPE), run / "cell.png", run.name))
    return paths


def is_search_run(run: str | Path) -> bool:
    from metalab.nas.search import HISTORY

    return (Path(run) / HISTORY).is_file()


def cmd_plot(args: argparse.Namespace) -> int:
    for path in plot_search_run(args.run):
        print(path)
    return 0


def add_nas_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``metalab nas`` and its verbs on the top-level parser's sub-parsers."""
    nas = sub.add_parser("nas", help="neural architecture search: DARTS on a supervised task, warm-started or cold")
    verbs = nas.add_subparsers(dest="nas_command", required=True)

    p = verbs.add_parser("presets", help="list the search presets")
    p.set_defaults(func=cmd_presets)

    p = verbs.add_parser("search", help="search a cell with DARTS, derive and retrain it (run directory: "
                                        "runs/nas/<name>, or run_dir=...)")
    p.add_argument("preset", help="preset name (`metalab nas presets`) or YAML path")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. search.steps=50 search.order=2 "
                                                "task.classes=[0,1,2,3,4] run_dir=runs/nas/d1")
    p.add_argument("--warm-start", metavar="RUN", help="initialise alpha (and with search.warm_start_weights=true "
                                                       "the weights) from an earlier search's run directory")
    p.add_argument("--data-root", help="data root for Omniglot (default: $METALAB_DATA, else the per-user data dir)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_search)

    p = verbs.add_parser("plot", help="draw a search run's cells (cell.png) and alpha over time (alpha.png)")
    p.add_argument("run", help="a `metalab nas search` run directory")
    p.set_defaults(func=cmd_plot)
