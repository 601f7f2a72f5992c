"""Meta-train, score and plot a learned optimizer (Andrychowicz et al. 2016): ``metalab train l2o-lstm-...``,
``metalab eval RUN``, ``metalab plot RUN``.

Why not the few-shot :class:`~metalab.train.trainer.Trainer`: its unit is a meta-batch of episodes scored by
accuracy or MSE on fixed validation episodes, while a learned optimizer's unit is one truncation of an
optimisation trajectory that carries theta and the LSTM state into the next truncation, scored by the loss
curves of whole trajectories against tuned hand-designed optimizers. This module is the same contract in a
loop of its own: runs in a run directory (``config.json``, ``metrics.jsonl``, ``last.pt`` with its checksum),
refused if one is there without ``--resume``; checkpoints at problem boundaries, so that a resumed run repeats
exactly what the uninterrupted one would have done (problems are a pure function of (seed, index)).
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from metalab.optimizers.baselines import BASELINES, run_baseline, tune_learning_rate
from metalab.optimizers.lstm import LSTMOptimizerNet, LSTMOptimizerOptions, load_optimizer_net, save_optimizer_net
from metalab.optimizers.problems import ProblemOptions, Problems, sample_problems
from metalab.optimizers.unroll import Trajectory, meta_loss, optimize, unroll
from metalab.train.checkpoint import LAST, load_checkpoint, save_checkpoint
from metalab.utils.io import atomic_write_text

log = logging.getLogger(__name__)
CONFIG = "config.json"


@dataclass
class L2OConfig:
    """A learned-optimizer run: the optimizee family, the network and its meta-training (the paper's values)."""

    name: str = "l2o-lstm-quadratic"
    description: str = ""
    problem: ProblemOptions = field(default_factory=ProblemOptions)
    net: LSTMOptimizerOptions = field(default_factory=LSTMOptimizerOptions)
    #: optimizer steps per truncation (the paper: 20).
    unroll: int = 20
    #: optimizer steps of a training problem (the paper: 100); a multiple of ``unroll``.
    horizon: int = 100
    #: problems optimised together in a meta-step (one batch of the meta-gradient).
    problems_per_step: int = 16
    #: Adam's learning rate on the optimizer's weights.
    meta_lr: float = 1e-3
    #: meta-steps (truncations); a multiple of horizon / unroll, so that a run ends at a problem boundary.
    steps: int = 500
    #: back-propagate through the optimizee's gradients too (the paper drops these second derivatives).
    second_order: bool = False
    seed: int = 0
    #: write last.pt every this many meta-steps (rounded up to a problem boundary).
    ckpt_every: int = 50
    log_every: int = 10
    #: run directory (None: runs/<name>).
    run_dir: str | None = None
    #: data root for the Omniglot family (None: $METALAB_DATA, then the user data dir).
    data_root: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.problem, dict):
            self.problem = ProblemOptions(**self.problem)
        if isinstance(self.net, dict):
            self.net = LSTMOptimizerOptions(**self.net)
        if self.unroll < 1 or self.horizon % self.unroll:
            raise ValueError(f"horizon ({self.horizon}) must be a multiple of unroll ({self.unroll} >= 1)")
        if self.steps < 1 or self.steps % self.truncations:
            raise ValueError(f"steps ({self.steps}) must be a positive multiple of horizon / unroll = "
                             f"{self.truncations}, so that the run ends at a problem boundary")
        if self.problems_per_step < 1 or not self.meta_lr > 0:
            raise ValueError(f"problems_per_step must be >= 1 and meta_lr > 0, got {self.problems_per_step}, "
                             f"{self.meta_lr}")

    @property
    def truncations(self) -> int:
        """Meta-steps per training problem."""
        return self.horizon // self.unroll


PRESETS: dict[str, dict[str, Any]] = {
    "l2o-lstm-quadratic": dict(
        description="LSTM optimizer (Andrychowicz et al. 2016) on random 10-d quadratics ||W theta - y||^2: "
                    "2x20 LSTM, unroll 20, horizon 100, Adam", problem=dict(family="quadratic"),
        problems_per_step=128, steps=1000),
    "l2o-lstm-digits": dict(
        description="LSTM optimizer (Andrychowicz et al. 2016) on an MLP (20 sigmoid units) over the 8x8 digits "
                    "(MNIST-like), minibatches of 128: 2x20 LSTM, unroll 20, horizon 100, Adam",
        problem=dict(family="digits"), problems_per_step=8, steps=500),
    "l2o-lstm-omniglot": dict(
        description="LSTM optimizer (Andrychowicz et al. 2016) on a tiny MLP (20 sigmoid units) over 5-way "
                    "Omniglot problems (14x14 px, 20 images a class, full batch): 2x20 LSTM, unroll 20, horizon 100",
        problem=dict(family="omniglot", batch=0), problems_per_step=8, steps=500),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def l2o_config(name: str, overrides: Sequence[str] = ()) -> L2OConfig:
    """The preset ``name`` with ``key=value`` overrides (``steps=100``, ``problem.mlp_hidden=40``,
    ``net.hidden=10``, ``run.dir=runs/x``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown learned-optimizer preset {name!r}; known: {', '.join(preset_names())}")
    values: dict[str, Any] = {"name": name, **json.loads(json.dumps(PRESETS[name]))}
    return apply_overrides(values, overrides)


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> L2OConfig:
    """``values`` (a config as a dict) with ``key=value`` overrides applied, as an :class:`L2OConfig`."""
    values = json.loads(json.dumps(values))
    defaults = asdict(L2OConfig(name="x", steps=5, horizon=100, unroll=20))
    for override in overrides:
        key, sep, text = override.partition("=")
        key = {"run.dir": "run_dir", "train.steps": "steps", "data.root": "data_root"}.get(key, key)
        path = key.split(".")
        section = defaults
        for part in path[:-1]:
            section = section.get(part) if isinstance(section, dict) else None  # type: ignore[assignment]
        if not sep or not isinstance(section, dict) or path[-1] not in section or isinstance(section[path[-1]], dict):
            known = [f"{k}.{sub}" if isinstance(v, dict) else k for k, v in defaults.items()
                     for sub in (v if isinstance(v, dict) else [None])]
            raise ValueError(f"unknown learned-optimizer option {override!r} (key=value); known keys: "
                             f"{', '.join(known)}, run.dir")
        default = section[path[-1]]
        value: Any = text
        if isinstance(default, bool):
            value = text.lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            value = int(text)
        elif isinstance(default, float):
            value = float(text)
        elif text.lower() in ("null", "none"):
            value = None
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return L2OConfig(**values)


def is_l2o_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a learned-optimizer run (its config.json names an ``l2o-`` preset)."""
    path = Path(run_dir) / CONFIG
    return path.is_file() and json.loads(path.read_text()).get("kind") == "l2o"


def default_run_dir(config: L2OConfig) -> Path:
    return Path(config.run_dir) if config.run_dir else Path("runs") / config.name


def omniglot_classes(split: str, data_root: str | None) -> tuple[torch.Tensor, list[list[int]]]:
    """Omniglot's images and items per class for the problems' split (train: vinyals-train, test: vinyals-test)."""
    from metalab.data.datasets import load_dataset

    data = load_dataset("omniglot", "vinyals-train" if split == "train" else "vinyals-test", root=data_root,
                        image_size=28, channels=1)
    return data.images, [items.tolist() for items in data.class_items]


def problems_of(config: L2OConfig, count: int, seed: int, horizon: int, split: str,
                problem: ProblemOptions | None = None) -> Problems:
    options = problem or config.problem
    omniglot = omniglot_classes(split, config.data_root) if options.family == "omniglot" else None
    return sample_problems(options, count, seed, horizon, split, omniglot)


def training_problems(config: L2OConfig, index: int) -> Problems:
    """The ``index``-th batch of training problems: a pure function of (config, seed, index)."""
    return problems_of(config, config.problems_per_step, config.seed * 1_000_003 + index + 1, config.horizon, "train")


def train_l2o(config: L2OConfig, resume: bool = False) -> Path:
    """Meta-train the LSTM optimizer; returns the run directory (``last.pt``, ``metrics.jsonl``, ``config.json``)."""
    run_dir = default_run_dir(config)
    last = run_dir / LAST
    if last.exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; continue it with --resume, or pick a new run.dir "
                              f"(nothing was overwritten)")
    if resume and not last.exists():
        raise FileNotFoundError(f"cannot resume: {last} does not exist; start the run without --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    net = LSTMOptimizerNet(config.net)
    adam = torch.optim.Adam(net.parameters(), lr=config.meta_lr)
    step = 0
    if resume:
        state = load_checkpoint(last)
        net = load_optimizer_net(state["optimizer_net"])
        adam = torch.optim.Adam(net.parameters(), lr=config.meta_lr)
        adam.load_state_dict(state["adam"])
        step = state["step"]
        log.info(f"resuming {run_dir} at meta-step {step}")
        logged = run_dir / "metrics.jsonl"
        if logged.exists():  # what the interrupted run logged after its last checkpoint is logged again
            kept = [line for line in logged.read_text().splitlines() if json.loads(line)["step"] <= step]
            atomic_write_text(logged, "".join(line + "\n" for line in kept))
    atomic_write_text(run_dir / CONFIG, json.dumps({"kind": "l2o", **asdict(config)}, indent=2) + "\n")
    ckpt_every = math.ceil(config.ckpt_every / config.truncations) * config.truncations
    metrics = (run_dir / "metrics.jsonl").open("a")
    start, trajectory, problems = time.perf_counter(), None, None
    try:
        while step < config.steps:
            if step % config.truncations == 0:
                problems = training_problems(config, step // config.truncations)
                trajectory = Trajectory(problems.initial(), None, 0)
            assert problems is not None and trajectory is not None
            losses, trajectory = unroll(net, problems, trajectory, config.unroll, config.second_order)
            objective = meta_loss(losses)
            if not torch.isfinite(objective):
                raise FloatingPointError(f"meta-step {step + 1}: the meta-loss is {float(objective)}; lower meta_lr "
                                         f"(now {config.meta_lr}) or the problems' scale")
            adam.zero_grad()
            objective.backward()
            adam.step()
            trajectory = trajectory.detached()
            step += 1
            if step % config.log_every == 0 or step == config.steps:
                record = {"step": step, "meta_loss": float(objective.detach()),
                          "final_loss": float(losses[-1].detach().mean()),
                          "seconds": round(time.perf_counter() - start, 2)}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                log.info(f"meta-step {step}/{config.steps}: meta-loss {record['meta_loss']:.4g}")
            if step % ckpt_every == 0 or step == config.steps:
                save_checkpoint(last, {"optimizer_net": save_optimizer_net(net), "adam": adam.state_dict(),
                                       "step": step, "config": {"kind": "l2o", **asdict(config)}})
    finally:
        metrics.close()
    return run_dir


def run_config(run_dir: str | Path) -> L2OConfig:
    saved = json.loads((Path(run_dir) / CONFIG).read_text())
    saved.pop("kind", None)
    return L2OConfig(**saved)


def curve_summary(losses: torch.Tensor) -> dict[str, list[float]]:
    """Mean and 95% band (mean +- 1.96 standard errors over problems) of losses [steps + 1, B] at each step."""
    mean = losses.double().mean(1)
    half = 1.96 * losses.double().std(1) / math.sqrt(losses.shape[1])
    return {"mean": mean.tolist(), "low": (mean - half).tolist(), "high": (mean + half).tolist()}


def evaluate_l2o(run_dir: str | Path, overrides: Sequence[str] = (), problems: int = 64,
                 tune_problems: int = 16, seed: int = 7, horizon_factor: int = 2) -> dict[str, Any]:
    """The learned optimizer against SGD, Adam, RMSprop and Nesterov (each rate tuned on training problems) on
    ``problems`` held-out problems, for ``horizon_factor`` x the training horizon; writes ``eval[-tag].json``.

    ``overrides`` (``problem.mlp_hidden=40``, ``problem.activation=relu``) change the held-out family: the
    paper's generalisation tests (the baselines are tuned on the changed family's training problems).
    """
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    changed = apply_overrides(asdict(config), list(overrides))
    net = load_optimizer_net(load_checkpoint(run_dir / LAST)["optimizer_net"])
    horizon = config.horizon * horizon_factor
    tuning = problems_of(changed, tune_problems, seed * 7919 + 1, config.horizon, "train")
    held_out = problems_of(changed, problems, seed, horizon, "test")
    curves, rates = {"learned": optimize(net, held_out, horizon)}, {}
    for name in BASELINES:
        rates[name] = tune_learning_rate(name, tuning, config.horizon)
        curves[name] = run_baseline(name, rates[name], held_out, horizon)
    table = {}
    for name, losses in curves.items():
        at = {f"loss_at_{t}": [float(losses[t].mean()), 1.96 * float(losses[t].std()) / math.sqrt(problems)]
              for t in (config.horizon, horizon)}
        # the share of held-out problems on which this optimizer ends the training horizon at or below the learned one
        share = float((losses[config.horizon] <= curves["learned"][config.horizon]).double().mean())
        table[name] = {"lr": rates.get(name), **at, "at_or_below_learned": None if name == "learned" else share}
    tag = "-".join(o.replace("problem.", "").replace("=", "") for o in overrides)
    result = {"run": str(run_dir), "overrides": list(overrides), "problems": problems, "horizon": config.horizon,
              "eval_horizon": horizon, "problem": asdict(changed.problem), "table": table,
              "curves": {name: curve_summary(losses) for name, losses in curves.items()}}
    atomic_write_text(run_dir / (f"eval-{tag}.json" if tag else "eval.json"), json.dumps(result) + "\n")
    return result


def format_table(result: dict[str, Any]) -> str:
    """The evaluation as a text table: final losses (mean +- 95% CI) at the training horizon and at the end."""
    h, end = result["horizon"], result["eval_horizon"]
    lines = [f"{result['problems']} held-out problems {result['problem']}",
             f"{'optimizer':10s} {'lr':>8s} {'loss at ' + str(h):>22s} {'loss at ' + str(end):>22s} "
             f"{'<= learned at ' + str(h):>18s}"]
    for name, row in result["table"].items():
        lr = "-" if row["lr"] is None else f"{row['lr']:.3g}"
        cells = [f"{row[f'loss_at_{t}'][0]:.4g} +- {row[f'loss_at_{t}'][1]:.2g}" for t in (h, end)]
        share = "-" if row["at_or_below_learned"] is None else f"{100 * row['at_or_below_learned']:.0f}% of problems"
        lines.append(f"{name:10s} {lr:>8s} {cells[0]:>22s} {cells[1]:>22s} {share:>18s}")
    return "\n".join(lines)


def plot_l2o(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Loss vs step (log scale; mean and 95% band) of every evaluation of the run: one PNG per ``eval*.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    evaluations = sorted(run_dir.glob("eval*.json"))
    if not evaluations:
        raise FileNotFoundError(f"{run_dir} has no evaluation yet: run `metalab eval {run_dir}` first")
    written = []
    for path in evaluations:
        result = json.loads(path.read_text())
        figure, axes = plt.subplots(figsize=(6, 4))
        for name, curve in result["curves"].items():
            steps = range(len(curve["mean"]))
            line, = axes.plot(steps, curve["mean"], label=name, linewidth=2 if name == "learned" else 1)
            axes.fill_between(steps, curve["low"], curve["high"], color=line.get_color(), alpha=0.2)
        axes.axvline(result["horizon"], color="grey", linestyle=":", linewidth=1)
        axes.set_yscale("log")
        axes.set_xlabel("optimizer step")
        axes.set_ylabel("loss (mean, 95% band)")
        variant = ", ".join(result["overrides"]) or "as trained"
        axes.set_title(f"{run_dir.name}: {result['problems']} held-out problems ({variant})", fontsize=9)
        axes.legend(fontsize=8)
        figure.tight_layout()
        target = Path(out) if out and len(evaluations) == 1 else run_dir / path.with_suffix(".png").name
        figure.savefig(target, dpi=110)
        plt.close(figure)
        written.append(target)
    return written


__all__ = ["L2OConfig", "PRESETS", "apply_overrides", "evaluate_l2o", "format_table", "is_l2o_run", "l2o_config",
           "plot_l2o", "preset_names", "run_config", "train_l2o"]
