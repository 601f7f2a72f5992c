"""``metalab online RECIPE``: FTML and its baselines over a task stream, in a run directory.

The run directory is the trainer's (:mod:`metalab.train.trainer`): ``config.yaml``, ``metrics.jsonl`` (one
``online/METHOD`` record per method and task), ``last.pt`` (written atomically after every task of the stream, with
every method's state: ``--resume`` goes on with the next task exactly as the uninterrupted run would),
``results.json`` (per method and task: the datapoints needed to reach ``online.target``, the accuracies after each
arrival and at the end) and ``efficiency.csv`` (the same, one row per method and task). ``metalab plot RUN`` draws
the learning efficiency curve (:mod:`metalab.train.online_plots`).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from metalab.algorithms.gradient.base import GradientLearner
from metalab.config import ConfigError
from metalab.data.streams import RainbowDigits
from metalab.train.build import build_learner
from metalab.train.checkpoint import LAST, load_checkpoint, save_checkpoint
from metalab.train.logging import RunLogger, progress_bar, truncate_after
from metalab.train.online import METHODS, OnlineMethod, OnlineOptions
from metalab.train.run_lock import run_lock
from metalab.train.trainer import RUN_FILES, RunExistsError, default_run_dir
from metalab.utils.io import atomic_write_text, stale_temp_files

log = logging.getLogger(__name__)

#: the task streams an online recipe can name in ``data.dataset``
STREAMS = ("rainbow-digits",)


def is_online(config: DictConfig) -> bool:
    """Whether ``config`` is an online recipe's (it has the ``online`` section)."""
    return "online" in config


def is_online_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run of ``metalab online`` (its config.yaml has the ``online`` section)."""
    path = Path(run_dir) / "config.yaml"
    return path.is_file() and "online" in (OmegaConf.load(path) or {})


def check_online(config: DictConfig) -> None:
    """Refuse an online config that cannot run, naming the key and the fix."""
    online = config.online
    unknown = [m for m in online.methods if m not in METHODS]
    if unknown or not online.methods:
        raise ConfigError(f"online.methods must name one or more of {', '.join(METHODS)}, got {list(online.methods)}")
    for key in ("arrival", "max_data", "queries", "meta_batch", "minibatch"):
        if online[key] < 1:
            raise ConfigError(f"online.{key} must be >= 1, got {online[key]}")
    if online.updates < 0:
        raise ConfigError(f"online.updates must be >= 0 (parameter updates after each arrival), got {online.updates}")
    if online.per_stage is not None and online.per_stage < 1:
        raise ConfigError(f"online.per_stage must be >= 1 (or null: every task), got {online.per_stage}")
    if config.data.dataset not in STREAMS:
        raise ConfigError(f"data.dataset={config.data.dataset!r} is not a task stream; an online recipe runs on "
                          f"{', '.join(STREAMS)}")


def build_stream(config: DictConfig) -> tuple[RainbowDigits, list[int]]:
    """The stream of ``config`` and the indices of the tasks the run takes from it, in stream order."""
    online = config.online
    stream = RainbowDigits(shots=-(-online.max_data // 10), queries=online.queries, seed=online.seed,
                           image_size=config.data.image_size or 28)
    per_stage = online.per_stage or stream.tasks_per_stage
    chosen = [s * stream.tasks_per_stage + i for s in range(len(stream.names))
              for i in range(min(per_stage, stream.tasks_per_stage))]
    return stream, chosen


class ChosenTasks:
    """Task ``i`` of the run: the ``i``-th chosen task of the stream (what :meth:`OnlineMethod.load_state_dict`
    rebuilds its buffer from)."""

    def __init__(self, stream: RainbowDigits, chosen: list[int]) -> None:
        self.stream, self.chosen = stream, chosen

    def task(self, index: int) -> Any:
        return self.stream.task(self.chosen[index])


class OnlineRun:
    """Runs ``config.online.methods`` over the stream of an online recipe, task by task; ``fit()`` returns the
    results that it writes to ``results.json``."""

    def __init__(self, config: DictConfig, resume: bool = False) -> None:
        check_online(config)
        self.config, self.resume = config, resume
        self.run_dir = default_run_dir(config)

    def _methods(self) -> dict[str, OnlineMethod]:
        """Every method with its own learner, all from the same initial weights (seeded by ``online.seed``)."""
        config, online = self.config, self.config.online
        options = OnlineOptions(**{f.name: online[f.name] for f in fields(OnlineOptions)})
        methods = {}
        for method in online.methods:
            torch.manual_seed(online.seed)
            learner = build_learner(config, self.input_shape)
            if not isinstance(learner, GradientLearner):
                raise ConfigError(f"learner.name={config.learner.name!r} is not gradient-based; FTML and its "
                                  f"baselines adapt by gradient steps (use maml)")
            methods[method] = OnlineMethod(learner, options, method)
        return methods

    def _start(self, held: ExitStack) -> dict[str, Any] | None:
        """Take the run directory, and return the checkpoint to resume from (None: a new run)."""
        last = self.run_dir / LAST
        if self.resume and not last.exists():
            raise FileNotFoundError(f"cannot resume: {last} does not exist; start the run without --resume")
        held.enter_context(run_lock(self.run_dir))
        for stale in stale_temp_files(self.run_dir, (LAST, *RUN_FILES, "efficiency.csv")):
            stale.unlink(missing_ok=True)  # half-written by a killed run; the files they were to replace are intact
        if self.resume:
            return load_checkpoint(last)
        if last.exists():
            raise RunExistsError(f"{self.run_dir} already holds a run; continue it with --resume, or pick a new "
                                 f"run.dir (nothing was overwritten)")
        leftovers = [name for name in (*RUN_FILES, "efficiency.csv") if (self.run_dir / name).exists()]
        if leftovers:
            raise RunExistsError(f"{self.run_dir} holds {', '.join(leftovers)} of a run that stopped before its first "
                                 f"task was done; remove them or pick a new run.dir")
        return None

    def fit(self) -> dict[str, Any]:
        with ExitStack() as held:
            saved = self._start(held)
            config = self.config
            stream, chosen = build_stream(config)
            tasks = ChosenTasks(stream, chosen)
            self.input_shape = tuple(stream.task(0).support_x.shape[1:])
            methods = self._methods()
            seconds = {method: 0.0 for method in methods}
            done = 0
            if saved is not None:
                done, seconds = int(saved["step"]), {**seconds, **saved.get("seconds", {})}
                if saved["stream_tasks"] != chosen[:done]:
                    raise ValueError(f"{self.run_dir / LAST} took the stream's tasks {saved['stream_tasks']}, and "
                                     f"this config takes {chosen[:done]} first: a resumed run keeps its stream "
                                     f"(drop the overrides of online.per_stage, data.* or online.seed), or start a "
                                     f"new run.dir")
                for method, online in methods.items():
                    if method not in saved["methods"]:
                        raise ValueError(f"{self.run_dir / LAST} has no state of {method!r} (it ran "
                                         f"{', '.join(saved['methods'])}); resume with the run's own online.methods")
                    online.load_state_dict(saved["methods"][method], tasks)
                torch.set_rng_state(saved["torch_rng"])
                truncate_after(self.run_dir / "metrics.jsonl", done)
            atomic_write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(config))
            logger = RunLogger(self.run_dir, tensorboard=config.run.tensorboard)
            bar = progress_bar(len(chosen), config.name, "task", enabled=config.train.progress, initial=done)
            try:
                for index in range(done, len(chosen)):
                    task = tasks.task(index)
                    for method, online in methods.items():
                        start = time.perf_counter()
                        record = online.learn(task)
                        seconds[method] += time.perf_counter() - start
                        logger.log(f"online/{method}", index + 1, {"method": method, "task": chosen[index],
                                                         "stage": stream.names[stream.stage(chosen[index])],
                                                         "efficiency": record.efficiency,
                                                         "final_accuracy": record.final_accuracy})
                    reached = ", ".join(f"{m} {o.records[-1].efficiency or '-'}" for m, o in methods.items())
                    bar.update(1)
                    bar.set_postfix_str(reached, refresh=False)
                    log.info(f"task {index + 1}/{len(chosen)} (stream task {chosen[index]}): datapoints to reach "
                             f"{config.online.target:.0%}: {reached}")
                    save_checkpoint(self.run_dir / LAST, self._state(index + 1, methods, seconds, chosen))
                    self._write_results(index + 1, methods, seconds, stream, chosen)
            finally:
                bar.close()
                logger.close()
            return self._write_results(len(chosen), methods, seconds, stream, chosen)

    def _state(self, done: int, methods: dict[str, OnlineMethod], seconds: dict[str, float],
               chosen: list[int]) -> dict[str, Any]:
        return {"step": done, "stream_tasks": chosen[:done], "config": OmegaConf.to_container(self.config),
                "input_shape": list(self.input_shape), "online": True,
                "methods": {m: online.state_dict() for m, online in methods.items()}, "seconds": dict(seconds),
                "torch_rng": torch.get_rng_state()}

    def _write_results(self, done: int, methods: dict[str, OnlineMethod], seconds: dict[str, float],
                       stream: RainbowDigits, chosen: list[int]) -> dict[str, Any]:
        """``results.json`` and ``efficiency.csv`` of the tasks done so far (written atomically)."""
        config = self.config
        results: dict[str, Any] = {
            "recipe": config.name, "learner": config.learner.name, "tasks_done": done, "tasks": len(chosen),
            "target": config.online.target, "max_data": config.online.max_data, "arrival": config.online.arrival,
            "stream_tasks": chosen[:done], "stages": [stream.names[stream.stage(t)] for t in chosen[:done]],
            "methods": {m: {"reached": sum(r.efficiency is not None for r in online.records),
                            "mean_final_accuracy": (sum(r.final_accuracy for r in online.records)
                                                    / max(len(online.records), 1)),
                            "seconds": seconds[m],
                            "tasks": [{**vars(r), "stream_task": chosen[r.task]} for r in online.records]}
                        for m, online in methods.items()},
        }
        atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2))
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["method", "task", "stream_task", "stage", "efficiency", "final_accuracy", "accuracies"])
        for method, online in methods.items():
            for r in online.records:
                t = chosen[r.task]
                writer.writerow([method, r.task, t, stream.names[stream.stage(t)],
                                 "" if r.efficiency is None else r.efficiency, f"{r.final_accuracy:.4f}",
                                 " ".join(f"{a:.4f}" for a in r.accuracies)])
        atomic_write_text(self.run_dir / "efficiency.csv", table.getvalue())
        return results
