"""The ``metalab`` command: recipes, show, train, online, eval, predict, plot, data, automl, nas, zoo.

What a command outputs (listings, configs, scores, predictions, paths) goes to stdout. Its own messages
(what it is doing, which checkpoint it uses, warnings, errors) go through Python's ``logging`` (the
``metalab`` logger) to stderr: ``-q`` keeps warnings and errors only (and hides progress bars), ``-v``
adds debug detail. An error the user can fix is one line, ``metalab: error: ...``, exit status 1; a
usage error is argparse's, status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

log = logging.getLogger("metalab")


class ConsoleHandler(logging.Handler):
    """The CLI's messages on stderr, as ``metalab: message`` (``metalab: warning: ...``, ``metalab: error: ...``),
    written above any progress bar (``tqdm.write``)."""

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        trace = "\n" + logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        return f"metalab: {level}{record.getMessage()}{trace}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except BrokenPipeError:
            pass
        except Exception:
            self.handleError(record)


def configure_logging(verbosity: int) -> None:
    """Messages of the ``metalab`` loggers to stderr: INFO and up (verbosity 0), DEBUG (> 0) or WARNING (< 0).

    Under ``torchrun`` only rank 0 says what it is doing; every rank reports warnings and errors.
    """
    for handler in [h for h in log.handlers if isinstance(h, ConsoleHandler)]:
        log.removeHandler(handler)
    log.addHandler(ConsoleHandler())
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    if os.environ.get("RANK", "0") != "0":
        level = max(level, logging.WARNING)
    log.setLevel(level)


def version_text() -> str:
    """``metalab --version``: metalab's version, and the torch and Python it runs on."""
    from metalab import __version__

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return f"metalab {__version__} (torch {torch_version}, Python {platform.python_version()})"


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
    from metalab.train.l2o import PRESETS

    for name in recipe_names():
        description = load_recipe(name).description
        print(f"{name:34s} {description}")
    for name, preset in sorted(PRESETS.items()):  # the learned optimizers' runs (docs/learned-optimizers.md)
        print(f"{name:34s} {preset['description']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from metalab.config import load_recipe
    from metalab.train.l2o import PRESETS, l2o_config

    if args.recipe in PRESETS:  # a learned optimizer's run: its L2OConfig, overrides applied
        from dataclasses import asdict

        print(json.dumps(asdict(l2o_config(args.recipe, args.overrides)), indent=2))
        return 0

    print(OmegaConf.to_yaml(load_recipe(args.recipe, args.overrides)), end="")
    return 0


def cmd_train_l2o(args: argparse.Namespace) -> int:
    """``metalab train l2o-lstm-...``: meta-train a learned optimizer (:mod:`metalab.train.l2o`)."""
    from metalab.train.l2o import apply_overrides, is_l2o_run, l2o_config, run_config, train_l2o

    overrides = [*args.overrides, *([f"data.root={args.data_root}"] if args.data_root else [])]
    if is_l2o_run(args.recipe):  # `metalab train RUN_DIR --resume`
        from dataclasses import asdict

        config = apply_overrides(asdict(run_config(args.recipe)), [*overrides, f"run.dir={args.recipe}"])
    else:
        config = l2o_config(args.recipe, overrides)
    print(train_l2o(config, resume=args.resume))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from metalab.config import compose, load_recipe, looks_like_path
    from metalab.train.checkpoint import LAST, config_of, load_checkpoint
    from metalab.train.l2o import PRESETS, is_l2o_run
    from metalab.train.trainer import Trainer

    if args.recipe in PRESETS or (args.resume and is_l2o_run(args.recipe)):
        return cmd_train_l2o(args)
    target = Path(args.recipe)
    if args.resume and target.is_dir():
        # `metalab train RUN_DIR --resume [overrides]`: the run's own config, plus overrides.
        saved = config_of(load_checkpoint(target / LAST))
        config = compose(saved, [*args.overrides, f"run.dir={target}"], origin=str(target / LAST))
    elif (args.resume and looks_like_path(args.recipe) and target.suffix not in (".yaml", ".yml")
          and not target.exists()):
        raise FileNotFoundError(
            f"no run directory {target} to resume: `metalab train RUN_DIR --resume` continues the run that an earlier "
            f"`metalab train RECIPE run.dir=RUN_DIR` wrote there (check the path); a recipe's run also resumes with "
            f"`metalab train RECIPE run.dir=DIR --resume`")
    else:
        config = load_recipe(args.recipe, args.overrides)
    if "online" in config:
        raise ValueError(f"{args.recipe} is an online recipe (a task stream, FTML and its baselines): run it with "
                         f"`metalab online {args.recipe}`")
    log.debug(f"the config of this run:\n{OmegaConf.to_yaml(config).rstrip()}")
    if config.speed.reuse_freed_memory:  # process-wide, so the command's default, not the Trainer's
        from metalab.accel.allocator import reuse_freed_memory

        reuse_freed_memory()
    Trainer(config, data_root=args.data_root, resume=args.resume).fit()
    return 0


def cmd_online(args: argparse.Namespace) -> int:
    """``metalab online RECIPE``: FTML and its baselines over a task stream (:mod:`metalab.train.online_run`)."""
    from metalab.config import compose, load_recipe
    from metalab.train.checkpoint import LAST, config_of, load_checkpoint
    from metalab.train.online_run import OnlineRun, is_online

    target = Path(args.recipe)
    if args.resume and target.is_dir():  # `metalab online RUN_DIR --resume`: the run's own config
        saved = config_of(load_checkpoint(target / LAST))
        config = compose(saved, [*args.overrides, f"run.dir={target}"], origin=str(target / LAST))
    else:
        config = load_recipe(args.recipe, args.overrides)
    if not is_online(config):
        raise ValueError(f"{args.recipe} is not an online recipe (it has no online section); `metalab train "
                         f"{args.recipe}` meta-trains it. Online recipes: rainbow-digits-ftml")
    results = OnlineRun(config, resume=args.resume).fit()
    print(f"{'method':8s} {'reached':>8s} {'mean final accuracy':>20s}")
    for method, values in results["methods"].items():
        print(f"{method:8s} {values['reached']:>4d}/{results['tasks']:<3d} {values['mean_final_accuracy']:20.3f}")
    return 0


def checkpoint_in_use(path: Path, state: dict[str, Any], given: str | None) -> str:
    """Which checkpoint a command scores or predicts with, and why that one (for a message)."""
    from metalab.train.checkpoint import BEST

    why = ("as --checkpoint asked" if given else "the best validation score" if path.name == BEST
           else f"the last one: the run has no {BEST}, it was trained without validation (train.val_every=0 or "
                f"eval.val_episodes=0); --checkpoint picks another")
    return f"{path} (step {state.get('step')}, {why})"


def cmd_eval_l2o(args: argparse.Namespace) -> int:
    """``metalab eval RUN`` of a learned optimizer: it and the tuned baselines on held-out problems."""
    from metalab.train.l2o import evaluate_l2o, format_table

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = evaluate_l2o(args.run, args.overrides, problems=args.episodes or 64,
                          seed=7 if args.seed is None else args.seed)
    if args.json:
        print(json.dumps({key: value for key, value in result.items() if key != "curves"}))
    else:
        print(format_table(result))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from metalab.data.episodes import FixedEpisodes
    from metalab.data.sources import evaluation_episodes
    from metalab.train.build import checkpoint_path, load_run
    from metalab.train.evaluate import episodes_per_batch, evaluate, peak_memory_mb
    from metalab.train.l2o import is_l2o_run

    if is_l2o_run(args.run):
        return cmd_eval_l2o(args)

    if args.manifest:
        fixed = [flag for flag, value in (("--ways", args.ways), ("--shots", args.shots), ("--queries", args.queries),
                                          ("--episodes", args.episodes), ("--seed", args.seed),
                                          ("--within-group", args.within_group)) if value]
        if fixed:
            raise ValueError(f"--manifest {args.manifest} fixes the episodes, so {', '.join(fixed)} would be ignored; "
                             f"drop {'it' if len(fixed) == 1 else 'them'}, or score new episodes without --manifest")
    path = checkpoint_path(args.run, args.checkpoint)
    learner, config, state = load_run(args.run, path, args.overrides)
    log.info(f"scoring {checkpoint_in_use(path, state, args.checkpoint)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if config.speed.reuse_freed_memory:
        from metalab.accel.allocator import reuse_freed_memory

        reuse_freed_memory()
    split = args.split or config.data.test_split
    episodes = evaluation_episodes(
        config, split, ways=args.ways, shots=args.shots, queries=args.queries, seed=args.seed, episodes=args.episodes,
        within_group=True if args.within_group else None, manifest=args.manifest, data_root=args.data_root,
    )
    shape = getattr(getattr(episodes, "dataset", None), "image_shape", None)
    if shape is not None and tuple(shape) != tuple(learner.input_shape):
        raise ValueError(f"{args.run} was trained on inputs of shape {tuple(learner.input_shape)} but the episodes of "
                         f"{split} are {tuple(shape)}: drop the overrides of data.image_size or data.channels, "
                         f"or score a split of the data it was trained on")
    if args.save_manifest:
        from metalab.utils.io import WriteError

        if not isinstance(episodes, FixedEpisodes):
            raise ValueError("--save-manifest applies to classification episodes")
        try:
            episodes.save(args.save_manifest)
        except WriteError as error:
            raise WriteError(f"{error}; nothing was scored: give --save-manifest a path where files can be written",
                             error.errno, error.filename) from error
    batch = episodes_per_batch(episodes, args.batch or config.speed.eval_batch, config.speed.eval_images)
    log.debug(f"{len(episodes)} episodes, {batch} per forward pass (speed.eval_batch={config.speed.eval_batch}, "
              f"--batch={args.batch}, speed.eval_images={config.speed.eval_images})")
    result = evaluate(learner, episodes, batch, progress=config.train.progress)
    peak = peak_memory_mb()
    if args.json:
        summary = result.as_dict()
        summary.update({"run": str(args.run), "checkpoint": str(path), "split": split, "step": state["step"],
                        "overrides": args.overrides, "episodes_per_batch": batch, "peak_memory_mb": round(peak, 1)})
        print(json.dumps(summary))
    else:
        print(f"{args.run} on {split}: {result}  [{result.episodes_per_second:.1f} episodes/s, "
              f"peak memory {peak:.0f} MB]")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from metalab.train.build import EMBEDDING_RECIPE, checkpoint_path, embedding_learner, load_run
    from metalab.train.predict import check_output, predict_images

    given = [source for source, value in (("a run directory", args.run), ("--model", args.model),
                                          ("--backbone", args.backbone)) if value is not None]
    if len(given) != 1:
        raise ValueError("give a run directory, --model NAME (a model of the zoo: `metalab zoo list`) or --backbone "
                         "SPEC (an untrained embedding, e.g. 'timm:resnet18(pretrained=true)'): "
                         + (f"only one of them, not {' and '.join(given)}" if given else "one of them"))
    if args.checkpoint and args.run is None:
        raise ValueError(f"--checkpoint picks a checkpoint of a run directory; {given[0]} has none to pick")
    output = check_output(args.output) if args.output else None  # a bad --output fails before any work
    if args.model is not None:
        from metalab.zoo import load_model

        learner, config, entry = load_model(args.model)
        log.info(f"predicting with zoo model {entry.name} (test accuracy {entry.accuracy_text()})")
    elif args.backbone is not None:
        learner, config = embedding_learner(args.backbone, args.image_size)
        log.info(f"predicting with {EMBEDDING_RECIPE}'s untrained ProtoNet on {args.backbone} "
                 f"({args.image_size}x{args.image_size} RGB)")
    else:
        path = checkpoint_path(args.run, args.checkpoint)
        learner, config, state = load_run(args.run, path)
        log.info(f"predicting with {checkpoint_in_use(path, state, args.checkpoint)}")
    if learner.task_kind != "classification":
        return predict_points(args, learner, output)
    predictions = predict_images(learner, config, args.support, args.query)
    for words, count in predictions.conversions.items():
        log.info(f"converted {count} image{'s' if count > 1 else ''} to the learner's input: {words}")
    show_rows(predictions.rows, args.json, output,
              lambda row: f"{row['query']}\t{row['class']}\t{row['probability']:.3f}")
    return 0


def show_rows(rows: list[dict[str, Any]], as_json: bool, output: Path | None,
              line: Callable[[dict[str, Any]], str]) -> None:
    """``metalab predict``'s results: ``output`` written (atomically) first, then stdout, one JSON list or ``line(row)``
    per row."""
    if output is not None:
        from metalab.train.predict import write_predictions

        write_predictions(rows, output)
        log.info(f"wrote {len(rows)} prediction{'s' if len(rows) != 1 else ''} to {output}")
    if as_json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(line(row))


def read_points(path: str, columns: int | None, what: str) -> Any:
    """The rows of a CSV file of numbers (a header line is skipped) as an array [N, columns]."""
    import numpy as np

    try:
        values = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError:
        values = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=1)
    except OSError as error:
        raise FileNotFoundError(f"{what} {path}: {error.strerror or error}") from None
    if columns is not None and values.shape[1] != columns:
        raise ValueError(f"{what} {path} has {values.shape[1]} columns; it needs {columns}")
    return values


def predict_points(args: argparse.Namespace, learner: Any, output: Path | None = None) -> int:
    """``metalab predict`` for a regression run: --support a CSV of x..., y... rows, --query CSVs of x... rows; each
    query's prediction and, where the learner has a predictive distribution, its central 95% interval."""
    import torch

    from metalab.data.task import Task
    from metalab.train.uncertainty import central_interval

    inputs = int(learner.input_shape[0])
    support = read_points(args.support, None, "--support")
    if support.shape[1] <= inputs:
        raise ValueError(f"--support {args.support} has {support.shape[1]} columns; a regression run with {inputs} "
                         f"input(s) reads rows of {inputs} x value(s) then the target value(s)")
    queries = [read_points(path, inputs, "--query") for path in args.query]
    query_x = torch.tensor([row for block in queries for row in block.tolist()], dtype=torch.float32)
    support_x = torch.tensor(support[:, :inputs], dtype=torch.float32)
    support_y = torch.tensor(support[:, inputs:], dtype=torch.float32)
    batch = Task.stack([Task(support_x, support_y, query_x, query_x.new_zeros(len(query_x), support_y.shape[1]))])
    prediction = learner.predict(batch)[0].detach()
    distribution = learner.predictive_distribution(batch)
    low = high = None
    if distribution is not None:
        low, high = (bound[0].detach() for bound in central_interval(distribution, 0.95))
    rows = [{"x": query_x[i].tolist(), "prediction": prediction[i].tolist(),
             "interval_95": None if low is None or high is None else [low[i].tolist(), high[i].tolist()]}
            for i in range(len(query_x))]
    def line(row: dict[str, Any]) -> str:
        interval = row["interval_95"]
        shown = "" if interval is None else "\t" + " ".join(f"[{a:.4g}, {b:.4g}]" for a, b in zip(*interval))
        return (" ".join(f"{v:.4g}" for v in row["x"]) + "\t" + " ".join(f"{v:.4g}" for v in row["prediction"])
                + shown)

    show_rows(rows, args.json, output, line)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from metalab.data.sources import has_class_data
    from metalab.nas.cli import is_search_run, plot_search_run
    from metalab.train.build import load_run
    from metalab.train.l2o import is_l2o_run, plot_l2o
    from metalab.train.online_plots import plot_online_run
    from metalab.train.online_run import is_online_run
    from metalab.train.plots import plot_reliability, plot_run, run_reliability

    if is_search_run(args.run):  # `metalab nas search`: the derived cells and alpha over time
        for drawn in plot_search_run(args.run):
            print(drawn)
        return 0
    if is_l2o_run(args.run):  # loss vs step of each evaluation of a learned optimizer
        for written in plot_l2o(args.run, args.out):
            print(written)
        return 0
    if is_online_run(args.run):  # `metalab online`: the learning-efficiency curve of each method
        print(plot_online_run(args.run, args.out))
        return 0
    path = plot_run(args.run, args.out, args.tasks, curves=True if args.curves else None)
    if path is None:
        raise ValueError(f"{args.run} is a regression run whose learner has no plot of test-task fits; --curves draws "
                         f"its learning curves")
    print(path)
    learner, config, _ = load_run(args.run)
    if has_class_data(config) and (args.reliability or not args.out):  # --out alone: only the plot it names
        reliability = args.reliability or Path(args.run) / "reliability.png"
        print(plot_reliability(run_reliability(args.run, args.data_root), reliability,
                               f"reliability of {Path(args.run).name} (test)"))
    genotype = getattr(learner, "genotype", None)
    if callable(genotype):  # a learner that searches an architecture (MetaNAS): its derived cells, alpha over time
        from metalab.nas.plots import plot_genotype, plot_meta_alpha
        from metalab.train.plots import read_metrics

        derived = genotype()
        derived.save(Path(args.run) / "genotype.json")
        print(plot_genotype(derived, Path(args.run) / "cell.png", Path(args.run).name))
        alpha_plot = plot_meta_alpha(read_metrics(args.run), Path(args.run) / "alpha.png", Path(args.run).name)
        if alpha_plot is not None:
            print(alpha_plot)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from metalab.data.datasets import describe_data, download_dataset
    from metalab.data.store import resolve_data_root

    if args.download:
        for path in download_dataset(args.download, resolve_data_root(args.data_root)):
            log.info(f"downloaded {path}")
    print(describe_data(args.data_root))
    return 0


def add_verbosity(parser: argparse.ArgumentParser, default: Any) -> None:
    """``-q``/``-v``, accepted before the sub-command and after it (``default=SUPPRESS`` there, so that a
    sub-command's parser does not overwrite what was given before it)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="count", default=default,
                       help="print only warnings and errors on stderr, and no progress bars")
    group.add_argument("-v", "--verbose", action="count", default=default,
                       help="print debug messages on stderr too, and the traceback of an error")


DATA_ROOT_HELP = "data root (default: $METALAB_DATA, else the per-user data dir)"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="metalab",
                                  description="Meta-learning: train, evaluate and use few-shot learners.")
    top.add_argument("--version", action="version", version=version_text(), help="print metalab's version and exit")
    add_verbosity(top, 0)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        made = sub.add_parser(name, help=help, description=help[0].upper() + help[1:].replace("%%", "%") + ".")
        add_verbosity(made, argparse.SUPPRESS)
        return made

    p = command("recipes", "list the named recipes")
    p.set_defaults(func=cmd_recipes)

    p = command("show", "print a recipe's full config with overrides applied")
    p.add_argument("recipe", help="recipe name (see `metalab recipes`) or YAML path")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.steps=2000")
    p.set_defaults(func=cmd_show)

    p = command("train", "meta-train a recipe (or resume a run)")
    p.add_argument("recipe", help="recipe name, YAML path, or (with --resume) a run directory")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.steps=2000 run.dir=runs/p1")
    p.add_argument("--resume", action="store_true", help="continue from <run.dir>/last.pt")
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.set_defaults(func=cmd_train)

    p = command("online", "run online meta-learning over a task stream (FTML and its baselines: datapoints each "
                          "new task needs to reach a target accuracy)")
    p.add_argument("recipe", help="online recipe name (e.g. rainbow-digits-ftml), YAML path, or (with --resume) a "
                                  "run directory")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. online.per_stage=2 run.dir=runs/s1")
    p.add_argument("--resume", action="store_true", help="continue from <run.dir>/last.pt with the next task")
    p.set_defaults(func=cmd_online)

    p = command("eval", "score a trained run on fixed episodes (mean +- 95%% CI)")
    p.add_argument("run", help="run directory")
    p.add_argument("overrides", nargs="*",
                   help="key=value changes to the run's config that keep its weights, e.g. learner.inner_steps_test=10")
    p.add_argument("--ways", type=count_of_at_least_one, help="classes per episode (default: the run's eval.ways)")
    p.add_argument("--shots", type=count_of_at_least_one, help="support examples per class (default: eval.shots)")
    p.add_argument("--queries", type=count_of_at_least_one, help="query examples per class (default: eval.queries)")
    p.add_argument("--episodes", type=count_of_at_least_one,
                   help="episodes to score (default: eval.episodes); held-out problems of a learned optimizer (64)")
    p.add_argument("--seed", type=int, help="seed of the episodes (default: eval.seed)")
    p.add_argument("--split", help="split to score on (default: the recipe's test split), e.g. lake-evaluation")
    p.add_argument("--within-group", action="store_true", help="draw all ways of an episode from one group (alphabet)")
    p.add_argument("--manifest", help="score exactly the episodes of this manifest")
    p.add_argument("--save-manifest", help="write the episodes used to this JSON manifest")
    p.add_argument("--checkpoint", help="checkpoint file, or its name in the run directory (default: the run's "
                                        "best.pt, else last.pt)")
    p.add_argument("--batch", type=count_of_at_least_one,
                   help="episodes per forward pass, at most (default: speed.eval_batch; speed.eval_images bounds the "
                        "images in one pass)")
    p.add_argument("--threads", type=count_of_at_least_one, help="torch threads")
    p.add_argument("--json", action="store_true", help="print one JSON object (with episodes/s and peak memory)")
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.set_defaults(func=cmd_eval)

    p = command("predict", "adapt to labelled examples and predict queries: classes of images, each with its "
                           "predictive probability; values of points (regression), each with its central 95%% "
                           "predictive interval")
    p.add_argument("run", nargs="?", help="run directory (or --model, or --backbone)")
    p.add_argument("--model", metavar="NAME", help="a model of the zoo instead of a run: predict without training "
                                                   "(`metalab zoo list` shows them)")
    p.add_argument("--backbone", help="predict without a run: a ProtoNet with this backbone's embedding, untrained "
                                      "(the 'good embedding' baseline), e.g. 'timm:resnet18(pretrained=true)' or "
                                      "'torchvision:resnet18(weights=PATH)'")
    p.add_argument("--image-size", type=count_of_at_least_one, default=224,
                   help="with --backbone: the size images are resized to (default 224, ImageNet's)")
    p.add_argument("--support", required=True, help="folder with one sub-folder of images per class (two classes "
                                                     "or more); for a regression run, a CSV file of x..., y... rows")
    p.add_argument("--query", required=True, nargs="+", action="extend",
                   help="image files, or folders of images (searched recursively: image extensions only, sorted by "
                        "path, hidden files and folders skipped), to classify; for a regression run, CSV files of x... "
                        "rows")
    p.add_argument("--output", metavar="FILE", help="also write the predictions to FILE.csv or FILE.json (the "
                                                    "suffix picks the format), atomically: all of them or nothing")
    p.add_argument("--checkpoint", help="checkpoint file, or its name in the run directory (default: the run's "
                                        "best.pt, else last.pt)")
    p.add_argument("--json", action="store_true", help="print one JSON list of {query, class, probability}: the "
                                                       "predicted class and its predictive probability (regression: "
                                                       "{x, prediction, interval_95}, the interval null for a learner "
                                                       "that predicts a point)")
    p.set_defaults(func=cmd_predict)

    p = command("plot", "plot a run: learning curves and reliability diagram (classification), fits on test tasks "
                        "(regression), loss curves (learned optimizers), learning efficiency (online runs), the "
                        "derived cells and alpha over time (NAS searches; MetaNAS runs get their cells too); PNG")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", help="PNG path (default: curves.png, sinusoid_fits.png, predictive.png or efficiency.png "
                                 "in the run directory)")
    p.add_argument("--tasks", type=count_of_at_least_one, default=4, help="test tasks to draw (regression; default 4)")
    p.add_argument("--curves", action="store_true", help="draw the learning curves of a regression run too")
    p.add_argument("--reliability", help="PNG path of a classification run's reliability diagram (default: "
                                         "reliability.png in the run directory; with --out and without this flag, "
                                         "only the plot --out names is drawn)")
    p.add_argument("--data-root", help=DATA_ROOT_HELP + "; read where the run's results.json has no reliability "
                                                        "bins and its test episodes are scored again")
    p.set_defaults(func=cmd_plot)

    p = command("data", "which data sets are found where, and how to get the missing ones")
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.add_argument("--download", metavar="NAME",
                   help="download a data set into the data root (omniglot, cifar100 (for CIFAR-FS and FC100), cub; "
                        "for one that cannot be downloaded, says how to get it)")
    p.set_defaults(func=cmd_data)

    from metalab.automl.cli import add_automl_parser

    add_automl_parser(sub)

    from metalab.nas.cli import add_nas_parser

    add_nas_parser(sub)

    from metalab.zoo.cli import add_zoo_parser

    add_zoo_parser(sub)
    return top


def drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on a closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests capture it)
        pass


def main(argv: list[str] | None = None) -> int:
    command_line = parser()
    args, extra = command_line.parse_known_args(argv)
    # key=value overrides may follow flags (`train RUN --resume train.steps=6`).
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        command_line.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.verbose - args.quiet)

    from metalab.train.distributed import RankFailedError
    from metalab.train.trainer import NonFiniteLossError
    from metalab.utils.io import WriteError

    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler below, not at exit
        return status
    except KeyboardInterrupt:
        log.error("interrupted; the last checkpoint is intact (resume with --resume)")
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`metalab recipes | head -1`): stop quietly, as `cat` would
        drop_stdout()
        return 141
    except (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError, RankFailedError, KeyError,
            WriteError) as error:
        if os.environ.get("METALAB_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        rank = os.environ.get("RANK", "0")
        # Under torchrun every rank meets the same error: rank 0 reports it, unless a rank failed.
        if rank == "0" or isinstance(error, RankFailedError):
            prefix = f"[rank {rank}] " if "WORLD_SIZE" in os.environ else ""
            log.error(f"{prefix}{message}")
            log.debug("where it was raised (-v):", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
