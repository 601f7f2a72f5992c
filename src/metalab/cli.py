"""The ``metalab`` command: recipes, train, eval, predict, data, automl."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf


def count_of_at_least_one(text: str) -> int:
    """argparse type of the counts (ways, shots, episodes, ...): an integer >= 1, else a usage error naming it."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def cmd_recipes(args: argparse.Namespace) -> int:
    from metalab.config import load_recipe, recipe_names

    for name in recipe_names():
        description = load_recipe(name).description
        print(f"{name:34s} {description}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from metalab.config import load_recipe

    print(OmegaConf.to_yaml(load_recipe(args.recipe, args.overrides)), end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from metalab.config import compose, load_recipe
    from metalab.train.checkpoint import LAST, config_of, load_checkpoint
    from metalab.train.trainer import Trainer

    target = Path(args.recipe)
    if args.resume and target.is_dir():
        # `metalab train RUN_DIR --resume [overrides]`: the run's own config, plus overrides.
        saved = config_of(load_checkpoint(target / LAST))
        config = compose(saved, [*args.overrides, f"run.dir={target}"], origin=str(target / LAST))
    else:
        config = load_recipe(args.recipe, args.overrides)
    Trainer(config, data_root=args.data_root, resume=args.resume).fit()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from metalab.data.episodes import FixedEpisodes
    from metalab.data.sources import is_regression, load_split, task_source
    from metalab.train.build import load_run
    from metalab.train.evaluate import evaluate

    learner, config, state = load_run(args.run, args.checkpoint, args.overrides)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if config.train.reuse_freed_memory:
        from metalab.train.allocator import reuse_freed_memory

        reuse_freed_memory()
    split = args.split or config.data.test_split
    if args.manifest:
        if is_regression(config):
            raise ValueError("--manifest applies to classification episodes; regression tasks are fixed by --seed")
        episodes = FixedEpisodes.load(args.manifest, load_split(config, split, args.data_root))
    else:
        ways = args.ways or config.eval.ways
        shots = args.shots or config.eval.shots
        queries = args.queries if args.queries is not None else config.eval.queries
        seed = args.seed if args.seed is not None else config.eval.seed
        source = task_source(config, split, ways, shots, queries, seed=seed,
                             within_group=args.within_group or config.eval.within_group, data_root=args.data_root)
        episodes = source.fixed(args.episodes or config.eval.episodes)
    if args.save_manifest:
        if not isinstance(episodes, FixedEpisodes):
            raise ValueError("--save-manifest applies to classification episodes")
        episodes.save(args.save_manifest)
    result = evaluate(learner, episodes, args.batch or config.eval.batch)
    if args.json:
        summary = result.as_dict()
        summary.update({"run": str(args.run), "split": split, "step": state["step"], "overrides": args.overrides})
        print(json.dumps(summary))
    else:
        print(f"{args.run} on {split}: {result}  [{result.episodes_per_second:.1f} episodes/s]")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from metalab.data.folders import load_image_files, load_image_folder
    from metalab.train.build import load_run

    learner, config, _ = load_run(args.run, args.checkpoint)
    if learner.task_kind != "classification":
        raise ValueError(f"{args.run} is a regression learner; predict takes class folders for classifiers")
    channels, size = learner.input_shape[0], learner.input_shape[1]
    invert = config.data.invert_user_images
    support = load_image_folder(args.support, image_size=size, channels=channels, invert=invert)
    support_x = torch.cat([support.get(c, range(support.items_in(c))) for c in range(support.num_classes)])
    support_y = torch.cat([torch.full((support.items_in(c),), c, dtype=torch.long) for c in range(support.num_classes)])
    query_x = load_image_files(args.query, image_size=size, channels=channels, invert=invert).float() / 255.0
    predictor = learner.adapt(support_x, support_y)
    probabilities = torch.softmax(predictor(query_x).detach(), dim=-1)
    predicted = probabilities.argmax(-1)
    rows = [
        {"query": str(path), "class": support.class_names[int(k)], "probability": float(probabilities[i, k])}
        for i, (path, k) in enumerate(zip(args.query, predicted))
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['query']}\t{row['class']}\t{row['probability']:.3f}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from metalab.train.plots import plot_run

    path = plot_run(args.run, args.out, args.tasks)
    if path is None:
        raise ValueError(f"{args.run} has no plot: plots are drawn for regression runs (sinusoid, gp)")
    print(path)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from metalab.data.store import describe_data, download_dataset, resolve_data_root

    if args.download:
        for path in download_dataset(args.download, resolve_data_root(args.data_root)):
            print(f"downloaded {path}")
    print(describe_data(args.data_root))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="metalab", description="Meta-learning: train, evaluate and use few-shot learners.")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recipes", help="list the named recipes")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("show", help="print a recipe's full config with overrides applied")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key=value")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("train", help="meta-train a recipe (or resume a run)")
    p.add_argument("recipe", help="recipe name, YAML path, or (with --resume) a run directory")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.steps=2000 run.dir=runs/p1")
    p.add_argument("--resume", action="store_true", help="continue from <run.dir>/last.pt")
    p.add_argument("--data-root", help="data root (default: $METALAB_DATA, else the per-user data dir)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="score a trained run on fixed episodes (mean +- 95%% CI)")
    p.add_argument("run", help="run directory")
    p.add_argument("overrides", nargs="*",
                   help="key=value changes to the run's config that keep its weights, e.g. learner.inner_steps_test=10")
    p.add_argument("--ways", type=count_of_at_least_one)
    p.add_argument("--shots", type=count_of_at_least_one)
    p.add_argument("--queries", type=count_of_at_least_one)
    p.add_argument("--episodes", type=count_of_at_least_one)
    p.add_argument("--seed", type=int)
    p.add_argument("--split", help="split to score on (default: the recipe's test split), e.g. lake-evaluation")
    p.add_argument("--within-group", action="store_true", help="draw all ways of an episode from one group (alphabet)")
    p.add_argument("--manifest", help="score exactly the episodes of this manifest")
    p.add_argument("--save-manifest", help="write the episodes used to this JSON manifest")
    p.add_argument("--checkpoint", help="checkpoint file (default: the run's best.pt, else last.pt)")
    p.add_argument("--batch", type=count_of_at_least_one, help="episodes per forward batch")
    p.add_argument("--threads", type=count_of_at_least_one, help="torch threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-root")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="adapt to a folder of labelled examples and classify query images")
    p.add_argument("run", help="run directory")
    p.add_argument("--support", required=True, help="folder with one sub-folder of images per class")
    p.add_argument("--query", required=True, nargs="+", help="image files to classify")
    p.add_argument("--checkpoint")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("plot", help="plot a regression run's fits on test tasks (PNG)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", help="PNG path (default: in the run directory)")
    p.add_argument("--tasks", type=count_of_at_least_one, default=4)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("data", help="which data sets are found where, and how to get the missing ones")
    p.add_argument("--data-root")
    p.add_argument("--download", choices=["omniglot"], help="download a data set into the data root")
    p.set_defaults(func=cmd_data)

    from metalab.automl.cli import add_automl_parser

    add_automl_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    from metalab.train.distributed import RankFailedError
    from metalab.train.trainer import NonFiniteLossError

    command_line = parser()
    args, extra = command_line.parse_known_args(argv)
    # key=value overrides may follow flags (`train RUN --resume train.steps=6`).
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        command_line.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("metalab: interrupted; the last checkpoint is intact (resume with --resume)", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError, RankFailedError, KeyError) as error:
        if os.environ.get("METALAB_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        rank = os.environ.get("RANK", "0")
        # Under torchrun every rank meets the same error: rank 0 reports it, unless a rank failed.
        if rank == "0" or isinstance(error, RankFailedError):
            prefix = f"[rank {rank}] " if "WORLD_SIZE" in os.environ else ""
            print(f"metalab: error: {prefix}{message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
