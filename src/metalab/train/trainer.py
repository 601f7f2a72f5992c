"""The meta-training loop shared by every learner.

The trainer zeroes gradients, asks the learner for a meta-step on the next meta-batch, checks the
loss, steps the optimiser, checks the weights, and periodically validates on fixed episodes,
checkpoints and logs. Tasks are a pure function of (seed, step), so a resumed run sees exactly the
tasks it would have seen without the interruption. One trainer at a time holds a run directory
(:mod:`metalab.train.run_lock`).

Under ``torchrun`` the same loop runs on every rank (see :mod:`metalab.train.distributed`): each rank
meta-steps on its share of the meta-batch, gradients are averaged before the optimiser step,
validation and test episodes are split across ranks, and only rank 0 touches the run directory.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
import time
import warnings
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from metalab.data.augment import augmented
from metalab.data.sources import (
    evaluation_episodes,
    has_class_data,
    input_shape,
    load_split,
    task_source,
)
from metalab.nn.library_backbones import weights_from_checkpoint
from metalab.train.build import build_learner, build_optimizer
from metalab.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from metalab.train.distributed import (
    RankFailedError,
    Ranks,
    distributed_session,
    evaluate_distributed,
    sigterm_as_error,
)
from metalab.train.evaluate import EvalResult, episodes_per_batch
from metalab.train.logging import RunLogger, TrainingProgress, truncate_after
from metalab.train.run_lock import run_lock
from metalab.utils.io import WriteError, atomic_write_text, stale_temp_files, write_error

#: What a run directory holds besides its checkpoints (and ``train.lock`` while a trainer runs).
RUN_FILES = ("config.yaml", "metrics.jsonl", "results.json", "tensorboard")

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss, gradient, parameter or buffer; the last good checkpoint (if one was
    written) is kept."""


class RunExistsError(FileExistsError):
    """The run directory already holds a run and --resume was not given."""


class _NoLogger:
    """What ranks other than 0 log to: nothing."""

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def default_run_dir(config: DictConfig) -> Path:
    return Path(config.run.dir) if config.run.dir else Path("runs") / config.name


class Trainer:
    """Meta-trains ``config``'s learner; ``fit()`` returns the final test result as a dict.

    Args:
        config: a composed config (see :func:`metalab.config.load_recipe`).
        data_root: overrides ``config.data.root`` (the ``--data-root`` flag).
        resume: continue from ``<run.dir>/last.pt`` instead of starting afresh.
    """

    #: the best validation so far (step, metric, mean, ci95); None before the first (set by fit())
    best: dict[str, Any] | None
    #: what computed the run's steps (torch version, threads, processes), from which step on (set by fit())
    computed_with: list[dict[str, Any]]

    def __init__(self, config: DictConfig, data_root: str | None = None, resume: bool = False) -> None:
        self.config = config
        self.data_root = data_root
        self.resume = resume
        self.run_dir = default_run_dir(config)
        self.device = torch.device(config.train.device)
        self.ranks = Ranks(device=self.device)
        #: whether train.max_minutes ended the last fit() before train.steps
        self.stopped_by_budget = False

    # ----------------------------------------------------------------------------------- setup
    def _prepare_run_dir(self, held: ExitStack) -> dict[str, Any] | None:
        """Take the run directory's lock (kept in ``held``), tidy it, and return the checkpoint to resume from."""
        last = self.run_dir / LAST
        if self.resume and not self.run_dir.is_dir():
            raise FileNotFoundError(f"cannot resume: {last} does not exist; start the run without --resume")
        held.enter_context(run_lock(self.run_dir))
        self._remove_stale_temp_files()
        leftovers = [name for name in RUN_FILES if (self.run_dir / name).exists()]
        if self.resume:
            if last.exists():
                return load_checkpoint(last)
            if leftovers:
                raise FileNotFoundError(
                    f"cannot resume: {self.run_dir} holds {', '.join(leftovers)} but no {LAST}: its run stopped before "
                    f"its first checkpoint (written every train.ckpt_every steps), so there is nothing to resume. "
                    f"Start it again without --resume (its files are then moved aside, not overwritten)")
            raise FileNotFoundError(f"cannot resume: {last} does not exist; start the run without --resume")
        if last.exists() or (self.run_dir / BEST).exists():
            raise RunExistsError(
                f"{self.run_dir} already holds a run; continue it with --resume, or pick a new run.dir "
                f"(nothing was overwritten)"
            )
        if leftovers:
            self._move_aside(leftovers)
        return None

    def _move_aside(self, names: list[str]) -> None:
        """Move the files of a run that stopped before its first checkpoint into a sub-folder, so that the new
        run's logs do not mix with them and nothing of them is lost."""
        number = 1
        while (self.run_dir / f"stopped-before-checkpoint-{number}").exists():
            number += 1
        aside = self.run_dir / f"stopped-before-checkpoint-{number}"
        aside.mkdir()
        for name in names:
            os.replace(self.run_dir / name, aside / name)
        print(f"metalab: {self.run_dir} held {', '.join(names)} of a run that stopped before its first checkpoint; "
              f"moved them to {aside}", file=sys.stderr)

    def _remove_stale_temp_files(self) -> None:
        """Remove the temporary files of checkpoints, logs and results that a killed trainer left half-written."""
        stale = stale_temp_files(self.run_dir, (LAST, BEST, *RUN_FILES))
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            print(f"metalab: removed {len(stale)} temporary file(s) that an interrupted write left in {self.run_dir}: "
                  f"{', '.join(p.name for p in stale)}", file=sys.stderr)

    def _build(self) -> None:
        config = self.config
        if config.speed.threads:
            torch.set_num_threads(config.speed.threads)
        torch.manual_seed(config.train.seed)
        log.info(f"loading {config.data.dataset} {config.data.train_split} and building {config.learner.name}")
        self.train_data = (load_split(config, config.data.train_split, self.data_root) if has_class_data(config)
                           else None)
        self.input_shape = input_shape(config, self.data_root, self.train_data)
        with weights_from_checkpoint() if self.resume else nullcontext():  # resumed: last.pt's weights replace them
            self.learner = build_learner(config, self.input_shape).to(self.device)
        self.ranks.broadcast_module(self.learner)
        self.optimizer, self.scheduler = build_optimizer(config, self.learner)
        self.train_tasks = task_source(
            config, config.data.train_split, config.task.ways, config.task.shots, config.task.queries,
            seed=config.train.seed, within_group=config.task.within_group, dataset=self.train_data,
        )
        self.train_tasks = augmented(self.train_tasks, config.data.augment, self.input_shape, config.train.seed)
        self.val_episodes = None
        if config.data.val_split and config.train.val_every > 0 and config.eval.val_episodes > 0:
            self.val_episodes = evaluation_episodes(config, config.data.val_split, seed=config.eval.val_seed,
                                                    episodes=config.eval.val_episodes, data_root=self.data_root)

    def _state(self, step: int) -> dict[str, Any]:
        return {
            "model": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "world_size": self.ranks.world_size,
            "config": OmegaConf.to_container(self.config),
            "input_shape": list(self.input_shape),
            "best": self.best,
            "computed_with": self.computed_with,
        }

    def _restore(self, state: dict[str, Any]) -> int:
        self._check_resumable(state)
        try:
            self.learner.load_state_dict(state["model"])
        except RuntimeError as error:  # the overrides built another network than the checkpoint's
            saved = state.get("config", {}).get("learner", {})
            now = cast("dict[str, Any]", OmegaConf.to_container(self.config.learner))  # a DictConfig's
            changed = [f"learner.{key}: {saved.get(key)!r} -> {now.get(key)!r}"
                       for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
            lines = str(error).splitlines()
            cause = (lines[1] if len(lines) > 1 else lines[0]).strip().rstrip(".")
            fix = (f"The overrides changed these learner options: {'; '.join(changed)}. Drop the ones that shape the "
                   f"network, or start a new run (another run.dir) with them" if changed
                   else "Start a new run (another run.dir) for another network")
            raise ValueError(f"{self.run_dir / LAST} does not fit the learner that this config builds ({cause}). "
                             f"A resumed run keeps the network it was trained with. {fix}.") from error
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.best = state.get("best")
        self.computed_with = list(state.get("computed_with", []))
        return int(state["step"])

    def _record_how_computed(self, step: int) -> None:
        """Note the torch version, threads and processes computing from ``step`` on: they change float rounding."""
        now = {"torch": torch.__version__, "threads": torch.get_num_threads(), "processes": self.ranks.world_size}
        if not self.computed_with or {k: v for k, v in self.computed_with[-1].items() if k != "from_step"} != now:
            self.computed_with.append({"from_step": step, **now})

    def _check_resumable(self, state: dict[str, Any]) -> None:
        """A checkpoint of any world size resumes into any other; a changed meta-batch is the user's call."""
        saved = state.get("config", {}).get("task", {}).get("meta_batch")
        if saved is not None and saved != self.config.task.meta_batch and self.ranks.is_main:
            warnings.warn(
                f"the checkpoint was trained with task.meta_batch={saved} and this run continues with "
                f"task.meta_batch={self.config.task.meta_batch}: the later steps see other tasks than the original "
                f"run would have. For the same run, resume with task.meta_batch={saved} on any number of processes "
                f"that divides it", stacklevel=2)

    # ------------------------------------------------------------------------------- the loop
    def train_step(self, step: int) -> dict[str, float]:
        """One meta-iteration on the meta-batch of ``step`` (this rank's share of it); returns its metrics.

        Metrics are the means over the whole meta-batch, the same on every rank.
        """
        start = step * self.config.task.meta_batch + self.rank_offset
        batch = self.train_tasks.batch(start, self.rank_tasks).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        metrics = {k: float(v) for k, v in self.learner.meta_step(batch).items()}
        self.ranks.average_gradients([p for p in self.learner.parameters() if p.requires_grad])
        metrics = self.ranks.average_metrics(metrics)
        loss = metrics["loss"]
        params = [p for p in self.learner.parameters() if p.grad is not None]
        max_norm = self.config.optim.grad_clip or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise self._diverged(
                f"the {'loss' if not math.isfinite(loss) else 'gradient'} became "
                f"{loss if not math.isfinite(loss) else grad_norm} at step {step}")
        self.optimizer.step()
        self.scheduler.step()
        self.ranks.average_buffers(self.learner)
        broken = self._non_finite_weights()
        if broken:
            names = ", ".join(broken[:4]) + (f" and {len(broken) - 4} more" if len(broken) > 4 else "")
            raise self._diverged(f"the weights became non-finite at step {step} (inf or NaN in {names}; the loss, "
                                 f"{loss:.4g}, was still finite)")
        return {**metrics, "grad_norm": grad_norm}

    @torch.no_grad()
    def _non_finite_weights(self) -> list[str]:
        """Names of the learner's floating-point parameters and buffers (BatchNorm statistics) holding inf or NaN."""
        named = [(name, t) for name, t in (*self.learner.named_parameters(), *self.learner.named_buffers())
                 if t.is_floating_point()]
        if not named:
            return []
        finite = torch.stack([torch.isfinite(t).all() for _, t in named])
        if bool(finite.all()):
            return []
        return [name for (name, _), ok in zip(named, finite.tolist()) if not ok]

    def _after_stop(self) -> tuple[str, str]:
        """(what was kept, how to go on) when training stops on an error: resume from last.pt, or start again."""
        if (self.run_dir / LAST).exists():
            return f"the last good checkpoint in {self.run_dir} was kept", "then resume with --resume"
        return "no checkpoint had been written yet", "then start the run again"

    def _write_failed(self, failure: WriteError) -> WriteError:
        """``failure`` (disk full, read-only, ...) with where the run stopped, what was kept and how to go on."""
        kept, then = self._after_stop()
        stopped = f"training stopped after step {self.step}" if self.loop_started else "training did not start"
        fix = "Free space there" if failure.errno in (errno.ENOSPC, errno.EDQUOT) else "Make that place writable"
        in_run = failure.filename is None or Path(failure.filename).resolve().is_relative_to(self.run_dir.resolve())
        elsewhere = " (or train in another run.dir)" if in_run else ""
        return WriteError(f"{failure}; {stopped} and {kept}. {fix}{elsewhere}, {then}.", failure.errno,
                          failure.filename)

    def _diverged(self, what: str) -> NonFiniteLossError:
        kept, then = self._after_stop()
        fix = f"Lower optim.lr or set optim.grad_clip{self.learner.divergence_hint}"
        return NonFiniteLossError(f"{what}; training stopped and {kept}. {fix}, {then}.")

    def _budget_spent(self, deadline: float) -> bool:
        """Whether the wall-clock budget ran out, decided the same on every rank (any rank past it stops all)."""
        past = float(time.perf_counter() >= deadline)
        return self.ranks.average_metrics({"past": past})["past"] > 0

    def validate(self) -> EvalResult:
        speed = self.config.speed
        batch = episodes_per_batch(self.val_episodes, speed.eval_batch, speed.eval_images)
        return evaluate_distributed(self.learner, self.val_episodes, batch, self.device, self.ranks)

    def _better(self, result: EvalResult) -> bool:
        if self.best is None:
            return True
        higher = result.metric in ("accuracy", "return")
        return result.mean > self.best["mean"] if higher else result.mean < self.best["mean"]

    def fit(self) -> dict[str, Any]:
        """Meta-train to ``train.steps``, then score the best checkpoint on the test episodes.

        Under ``torchrun`` every rank calls this; every rank returns the same results.
        """
        with distributed_session(self.config.train.device) as ranks, sigterm_as_error(ranks), ExitStack() as held:
            self.ranks, self.device = ranks, ranks.device
            self.step, self.loop_started = 0, False
            try:
                return self._fit(held)
            except OSError as error:
                failure = write_error(error, None if error.filename else self.run_dir, writing=False)
                if failure is None:
                    raise
                raise self._write_failed(failure) from error
            except RankFailedError as error:
                raise RankFailedError(
                    f"{error}; the run stopped after step {self.step}. Its last checkpoint "
                    f"({self.run_dir / LAST}, written by rank 0 every train.ckpt_every={self.config.train.ckpt_every} "
                    f"steps) is intact: find the failing rank's own error in the log, then continue with --resume on "
                    f"any number of processes that divides task.meta_batch={self.config.task.meta_batch}"
                ) from error

    def _fit(self, held: ExitStack) -> dict[str, Any]:
        config, ranks = self.config, self.ranks
        self.rank_offset, self.rank_tasks = ranks.share(config.task.meta_batch)
        resumed = ranks.on_main(lambda: self._prepare_run_dir(held))
        self._build()
        self.best = None
        self.computed_with = []
        step = 0
        if resumed is not None:
            step = self._restore(resumed)
            if ranks.is_main:
                truncate_after(self.run_dir / "metrics.jsonl", step)
        self.step = step
        self._record_how_computed(step)
        if ranks.is_main:
            atomic_write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(config))
        logger = (RunLogger(self.run_dir, tensorboard=config.run.tensorboard, config=config, step=step) if ranks.is_main
                  else _NoLogger())
        total = config.train.steps
        progress = TrainingProgress(total, step, config.name, enabled=config.train.progress and ranks.is_main,
                                    max_minutes=config.train.max_minutes)
        window: dict[str, float] = {}
        window_start, window_steps = time.perf_counter(), 0
        deadline = None if config.train.max_minutes is None else time.perf_counter() + 60.0 * config.train.max_minutes
        self.stopped_by_budget = False
        self.loop_started = True
        try:
            while step < total:
                metrics = self.train_step(step)
                step += 1
                self.step = step
                if deadline is not None and self._budget_spent(deadline):
                    self.stopped_by_budget = True
                    log.info(f"step {step}: train.max_minutes={config.train.max_minutes} spent; "
                             f"validating, saving and testing this step as the last")
                    total = step
                window_steps += 1
                for key, value in metrics.items():
                    window[key] = window.get(key, 0.0) + value
                progress.update(step)
                if step % config.train.log_every == 0 or step == total:
                    elapsed = time.perf_counter() - window_start
                    averaged = {k: v / window_steps for k, v in window.items()}
                    averaged["steps_per_second"] = window_steps / elapsed if elapsed > 0 else 0.0
                    averaged["lr"] = float(self.scheduler.get_last_lr()[0])  # a float lr (typed float | Tensor)
                    logger.log("train", step, averaged)
                    progress.show({k: averaged[k] for k in ("loss", "accuracy", "return") if k in averaged})
                    window, window_start, window_steps = {}, time.perf_counter(), 0
                if self.val_episodes is not None and (step % config.train.val_every == 0 or step == total):
                    result = self.validate()
                    logger.log("val", step, {result.metric: result.mean, "ci95": result.ci95, **result.stage_means()})
                    if self._better(result):
                        self.best = {"step": step, "metric": result.metric, "mean": result.mean, "ci95": result.ci95}
                        if ranks.is_main:
                            save_checkpoint(self.run_dir / BEST, self._state(step))
                    if ranks.is_main:
                        best = self.best is not None and self.best["step"] == step
                        progress.write(f"step {step}: val {result}" + (" (best)" if best else ""))
                if step % config.train.ckpt_every == 0 or step == total:
                    ranks.check_identical(self.learner)
                    if ranks.is_main:
                        save_checkpoint(self.run_dir / LAST, self._state(step))
            progress.close()  # before the test's report, so the bar does not redraw after it
            results = self.test(step, logger)
        finally:
            progress.close()
            logger.close()
        return results

    def test(self, step: int, logger: RunLogger | _NoLogger) -> dict[str, Any]:
        """Score the best checkpoint (or the final weights without validation) on the test episodes."""
        config, ranks = self.config, self.ranks
        checkpoint = LAST
        best = self.run_dir / BEST
        best_model = ranks.on_main(lambda: load_checkpoint(best)["model"] if best.exists() else None)
        if best_model is not None:
            self.learner.load_state_dict(best_model)
            checkpoint = BEST
        episodes = evaluation_episodes(config, config.data.test_split, data_root=self.data_root)
        batch = episodes_per_batch(episodes, config.speed.eval_batch, config.speed.eval_images)
        result = evaluate_distributed(self.learner, episodes, batch, self.device, ranks,
                                      progress=config.train.progress and ranks.is_main)
        logger.log("test", step, {result.metric: result.mean, "ci95": result.ci95, **result.stage_means()})
        results = {
            "recipe": config.name,
            "learner": config.learner.name,
            "steps": step,
            "checkpoint": checkpoint,
            "best_val": self.best,
            "stopped_by_budget": self.stopped_by_budget,
            "split": config.data.test_split,
            "test": result.as_dict(),
            "computed_with": self.computed_with,
        }
        if ranks.is_main:
            atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2))
            print(f"test ({config.data.test_split}, {checkpoint}): {result}")
            if not has_class_data(config):
                from metalab.train.plots import plot_run

                plot = plot_run(self.run_dir)
                if plot is not None:
                    print(f"plot of test tasks: {plot}")
        return results
