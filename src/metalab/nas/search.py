"""A DARTS search run on a supervised task: the bilevel alternation, the run directory, warm start, retraining.

Each search step (Liu et al. 2019, Algorithm 1):

1. alpha: one Adam step (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3) on the architecture gradient of a
   validation batch (:mod:`metalab.nas.darts`, first or second order);
2. w: one SGD step (lr 0.025 cosine-annealed to 0.001 over the search, momentum 0.9, weight decay 3e-4,
   gradient norm clipped at 5) on a training batch.

A run directory holds ``config.yaml``, ``history.jsonl`` (per evaluation: step, training loss, the one-shot
network's validation accuracy, softmax(alpha) of both cells), ``search.pt`` (the final alpha and weights: what a
warm start reads), ``genotype.json`` (the derived architecture) and ``result.json`` (search and retraining
scores). A warm start (:func:`warm_start`) initialises alpha, and with ``search.warm_start_weights`` the
weights too, from an earlier run's ``search.pt``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from metalab.nas.darts import architecture_gradient_first_order, architecture_gradient_second_order
from metalab.nas.genotype import Genotype
from metalab.nas.space import (
    SearchNetwork,
    SpaceOptions,
    alpha_names,
    derived_classifier,
    search_classifier,
    weight_names,
)
from metalab.nas.tasks import SupervisedTask, TaskOptions, load_task
from metalab.nn.backbones import Conv4, conv_block

log = logging.getLogger("metalab.nas")

SEARCH_STATE, GENOTYPE, HISTORY, RESULT, CONFIG = "search.pt", "genotype.json", "history.jsonl", "result.json", \
    "config.yaml"


@dataclass
class SearchOptions:
    #: search steps (one alpha step and one weight step each).
    steps: int = 300
    #: examples per training and per validation batch (DARTS: 64).
    batch: int = 64
    #: 1: first-order architecture gradient; 2: second order (the finite-difference unrolled gradient).
    order: int = 1
    w_lr: float = 0.025
    #: the weights' learning rate at the last step (cosine annealing).
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_grad_clip: float = 5.0
    alpha_lr: float = 3e-4
    alpha_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    alpha_weight_decay: float = 1e-3
    #: validation accuracy of the one-shot network every this many steps (and at steps 0 and the last).
    eval_every: int = 25
    #: a warm start also takes the weights (not only alpha) of the earlier run.
    warm_start_weights: bool = False
    #: also record the validation accuracy with BatchNorm on the validation set's own statistics
    #: (``val_accuracy_batch_stats``), which does not lag behind the weights as the running statistics do.
    eval_batch_stats: bool = False


@dataclass
class RetrainOptions:
    #: training steps of the derived network on train + val (0: no retraining).
    steps: int = 600
    batch: int = 64
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    #: channels and cells of the derived network (None: the search's).
    channels: int | None = None
    cells: int | None = None
    #: also train the hand-designed Conv-4 baseline with the same steps (its channels chosen to match the size).
    baseline: bool = True


@dataclass
class NASConfig:
    name: str = "custom"
    description: str = ""
    task: TaskOptions = field(default_factory=TaskOptions)
    space: SpaceOptions = field(default_factory=SpaceOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    retrain: RetrainOptions = field(default_factory=RetrainOptions)
    seed: int = 0
    #: torch threads (0: torch's default).
    threads: int = 0
    #: run directory (None: runs/nas/<name>).
    run_dir: str | None = None
    #: data root for Omniglot (None: $METALAB_DATA, then the per-user data dir).
    data_root: str | None = None


def preset_dir() -> Path:
    return Path(str(resources.files("metalab") / "nas" / "presets"))


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_config(name: str, overrides: list[str] = ()) -> DictConfig:  # type: ignore[assignment]
    """A preset by name (``metalab nas presets``) or a YAML path, with ``key=value`` overrides."""
    path = Path(name) if Path(name).suffix in (".yaml", ".yml") else preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no NAS preset {name!r}; presets: {', '.join(preset_names())} (or a YAML file)")
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise ValueError(f"overrides are key=value (e.g. search.steps=50), got {bad}")
    try:
        config = OmegaConf.merge(OmegaConf.structured(NASConfig), OmegaConf.load(path),
                                 OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:
        raise ValueError(f"{path.name}: {str(error).splitlines()[0]} (keys: task.*, space.*, search.*, retrain.*, "
                         f"seed, threads, run_dir, data_root)") from None
    check_config(cast(DictConfig, config))
    return cast(DictConfig, config)


def check_config(config: DictConfig) -> None:
    search = config.search
    if search.order not in (1, 2):
        raise ValueError(f"search.order must be 1 (first order) or 2 (second order), got {search.order}")
    for key in ("steps", "batch", "eval_every"):
        if search[key] < 1:
            raise ValueError(f"search.{key} must be >= 1, got {search[key]}")
    if config.retrain.steps < 0:
        raise ValueError(f"retrain.steps must be >= 0 (0: no retraining), got {config.retrain.steps}")


def batches(x: Tensor, y: Tensor, size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled minibatches of (x, y), a new permutation every epoch."""
    while True:
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y) - min(size, len(y)) + 1, min(size, len(y))):
            index = order[start: start + min(size, len(y))]
            yield x[index], y[index]


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 512, batch_stats: bool = False) -> float:
    """Accuracy of ``model`` on (x, y): in evaluation mode (BatchNorm's running statistics), or with
    ``batch_stats`` in training mode (BatchNorm normalises each chunk of ``chunk`` images by its own statistics;
    the running statistics are restored afterwards, so nothing of the model changes)."""
    was = model.training
    saved = {name: b.clone() for name, b in model.named_buffers()} if batch_stats else {}
    model.train(batch_stats)
    with torch.no_grad():
        correct = sum(int((model(x[i: i + chunk]).argmax(-1) == y[i: i + chunk]).sum())
                      for i in range(0, len(y), chunk))
    for name, buffer in model.named_buffers():
        if name in saved:
            buffer.copy_(saved[name])
    model.train(was)
    return correct / max(len(y), 1)


def count_parameters(model: nn.Module, exclude_alpha: bool = True) -> int:
    names = set(weight_names(model)) if exclude_alpha else None
    return sum(p.numel() for n, p in model.named_parameters() if names is None or n in names)


def body_of(model: nn.Module) -> SearchNetwork:
    return cast(SearchNetwork, cast(nn.Sequential, model).body)


def warm_start(model: nn.Module, run: str | Path, weights: bool) -> list[str]:
    """Initialise alpha (and with ``weights`` every weight whose shape matches) from ``run``'s ``search.pt``.

    Returns the names taken. The architectures must be of the same space (operations, nodes).
    """
    path = Path(run) / SEARCH_STATE
    if not path.is_file():
        raise FileNotFoundError(f"--warm-start {run}: no {SEARCH_STATE} there; give the directory of a finished "
                                f"`metalab nas search` run")
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    own = model.state_dict()
    names = alpha_names(model)
    for name in names:
        if name not in state or state[name].shape != own[name].shape:
            raise ValueError(f"--warm-start {run}: its {name} is {list(state.get(name, torch.empty(0)).shape)}, this "
                             f"search's {list(own[name].shape)}; warm-start from a search of the same operations and "
                             f"nodes")
    taken = list(names)
    if weights:
        alphas = set(names)
        taken += [n for n, v in state.items() if n in own and n not in alphas and v.shape == own[n].shape]
    model.load_state_dict({**own, **{n: state[n] for n in taken}})
    return taken


def run_search(config: DictConfig, warm_start_run: str | Path | None = None,
               task: SupervisedTask | None = None) -> dict[str, Any]:
    """Search, derive, save and (``retrain.steps`` > 0) retrain; returns the result written to ``result.json``."""
    if config.threads:
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(int(config.seed))
    task = task or load_task(cast(TaskOptions, OmegaConf.to_object(config.task)), config.data_root)
    space = cast(SpaceOptions, OmegaConf.to_object(config.space))
    run_dir = Path(config.run_dir or Path("runs") / "nas" / config.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(OmegaConf.to_yaml(config))
    log.info(f"searching {task.name} ({task.classes} classes, {len(task.train[1])} train / {len(task.val[1])} val / "
             f"{len(task.test[1])} test, inputs {task.input_shape}) into {run_dir}")

    model = search_classifier(space, task.input_shape, task.classes)
    if warm_start_run is not None:
        taken = warm_start(model, warm_start_run, bool(config.search.warm_start_weights))
        what = "alpha and weights" if len(taken) > 2 else "alpha"
        log.info(f"warm start from {warm_start_run}: {len(taken)} tensors ({what})")
    started = time.perf_counter()
    history = search(model, task, config.search, run_dir / HISTORY)
    search_seconds = time.perf_counter() - started
    body = body_of(model)
    genotype = body.genotype()
    genotype.save(run_dir / GENOTYPE)
    torch.save({"model": model.state_dict(), "space": OmegaConf.to_container(config.space),
                "classes": task.classes, "input_shape": list(task.input_shape)}, run_dir / SEARCH_STATE)
    print(f"genotype of {task.name}:\n{genotype}")
    result: dict[str, Any] = {
        "task": task.name, "steps": int(config.search.steps), "order": int(config.search.order),
        "warm_start": str(warm_start_run) if warm_start_run else None,
        "search_val_accuracy": history[-1]["val_accuracy"], "search_seconds": round(search_seconds, 1),
        "supernet_parameters": count_parameters(model)}
    if config.retrain.steps > 0:
        result.update(retrain(genotype, space, task, config.retrain, int(config.seed)))
    (run_dir / RESULT).write_text(json.dumps(result, indent=1) + "\n")
    return result


def search(model: nn.Module, task: SupervisedTask, options: Any, history_path: Path | None = None
           ) -> list[dict[str, Any]]:
    """The bilevel alternation (module docstring) for ``options.steps`` steps; returns the evaluation history."""
    alphas, weights = alpha_names(model), weight_names(model)
    params = dict(model.named_parameters())
    w_optimizer = torch.optim.SGD([params[n] for n in weights], lr=options.w_lr, momentum=options.w_momentum,
                                  weight_decay=options.w_weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optimizer, options.steps, eta_min=options.w_lr_min)
    a_optimizer = torch.optim.Adam([params[n] for n in alphas], lr=options.alpha_lr,
                                   betas=tuple(options.alpha_betas), weight_decay=options.alpha_weight_decay)
    generator = torch.Generator().manual_seed(int(torch.initial_seed()) % (2 ** 31))
    train_batches = batches(*task.train, options.batch, generator)
    val_batches = batches(*task.val, options.batch, generator)
    history: list[dict[str, Any]] = []
    handle = history_path.open("w") if history_path is not None else None
    losses: list[float] = []

    def record(step: int) -> None:
        normal, reduce = body_of(model).edge_weights()
        entry = {"step": step, "train_loss": sum(losses) / len(losses) if losses else math.nan,
                 "val_accuracy": accuracy(model, *task.val), "w_lr": w_optimizer.param_groups[0]["lr"],
                 "alpha_normal": normal.detach().tolist(), "alpha_reduce": reduce.detach().tolist()}
        if options.eval_batch_stats:
            entry["val_accuracy_batch_stats"] = accuracy(model, *task.val, batch_stats=True)
        losses.clear()
        history.append(entry)
        log.info(f"step {step}: val accuracy {entry['val_accuracy']:.4f}, train loss {entry['train_loss']:.4f}")
        if handle is not None:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()

    try:
        record(0)
        model.train()
        for step in range(1, options.steps + 1):
            train, val = next(train_batches), next(val_batches)
            # 1. alpha on a validation batch
            if options.order == 1:
                grads = architecture_gradient_first_order(model, alphas, val)
            else:
                buffers = {n: w_optimizer.state[params[n]]["momentum_buffer"] for n in weights
                           if "momentum_buffer" in w_optimizer.state[params[n]]}
                grads = architecture_gradient_second_order(
                    model, alphas, weights, train, val, xi=w_optimizer.param_groups[0]["lr"],
                    momentum=options.w_momentum, momentum_buffers=buffers, weight_decay=options.w_weight_decay)
            for name, grad in zip(alphas, grads):
                params[name].grad = grad
            a_optimizer.step()
            a_optimizer.zero_grad(set_to_none=True)
            # 2. w on a training batch
            loss = F.cross_entropy(model(train[0]), train[1])
            w_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for name in alphas:
                params[name].grad = None  # the weights' loss moves no alpha
            nn.utils.clip_grad_norm_([params[n] for n in weights], options.w_grad_clip)
            w_optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise ValueError(f"the search diverged at step {step} (loss {losses[-1]}); lower search.w_lr")
            if step % options.eval_every == 0 or step == options.steps:
                record(step)
    finally:
        if handle is not None:
            handle.close()
    return history


def train_classifier(model: nn.Module, x: Tensor, y: Tensor, options: Any, seed: int) -> nn.Module:
    """SGD with momentum, cosine-annealed to 0, on (x, y) for ``options.steps`` minibatch steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=options.lr, momentum=options.momentum,
                                weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, options.steps)
    stream = batches(x, y, options.batch, torch.Generator().manual_seed(seed))
    model.train()
    for _ in range(options.steps):
        bx, by = next(stream)
        loss = F.cross_entropy(model(bx), by)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
    return model


def conv4_baseline(input_shape: tuple[int, ...], classes: int, hidden: int) -> nn.Sequential:
    """The hand-designed Conv-4 (conv3x3-BN-ReLU blocks, max-pool 2 after each while the map is larger than 1)."""
    size = min(input_shape[1:])
    if size >= 16:
        body: nn.Module = Conv4(input_shape[0], hidden)
    else:  # 8x8 digits: three halvings fit
        pools = [size >> (i + 1) >= 1 for i in range(4)]
        channels = [input_shape[0]] + [hidden] * 4
        body = nn.Sequential(*(conv_block(channels[i], channels[i + 1], pool=pools[i]) for i in range(4)),
                             nn.Flatten())
    with torch.no_grad():
        features = body(torch.zeros(2, *input_shape)).shape[1]
    return nn.Sequential(body, nn.Linear(features, classes))


def matching_conv4(input_shape: tuple[int, ...], classes: int, parameters: int) -> nn.Sequential:
    """The Conv-4 whose parameter count is nearest ``parameters``."""
    best = min(range(4, 129, 2), key=lambda h: abs(count_parameters(conv4_baseline(input_shape, classes, h))
                                                   - parameters))
    return conv4_baseline(input_shape, classes, best)


def retrain(genotype: Genotype, space: SpaceOptions, task: SupervisedTask, options: Any, seed: int
            ) -> dict[str, Any]:
    """Train the derived network (affine BatchNorm) from scratch on train + val; score it (and the Conv-4 baseline
    of about the same size) on the held-out test split."""
    sized = SpaceOptions(**{**space.__dict__, "channels": options.channels or space.channels,
                            "cells": options.cells or space.cells})
    torch.manual_seed(seed)
    derived = derived_classifier(genotype, sized, task.input_shape, task.classes)
    x, y = task.train_and_val()
    started = time.perf_counter()
    train_classifier(derived, x, y, options, seed)
    out: dict[str, Any] = {"retrain_steps": int(options.steps), "derived_parameters": count_parameters(derived),
                           "derived_test_accuracy": accuracy(derived, *task.test),
                           "retrain_seconds": round(time.perf_counter() - started, 1)}
    log.info(f"derived network: {out['derived_parameters']} parameters, test accuracy "
             f"{out['derived_test_accuracy']:.4f}")
    if options.baseline:
        torch.manual_seed(seed)
        conv4 = matching_conv4(task.input_shape, task.classes, out["derived_parameters"])
        train_classifier(conv4, x, y, options, seed)
        out.update({"conv4_parameters": count_parameters(conv4), "conv4_test_accuracy": accuracy(conv4, *task.test)})
        log.info(f"Conv-4 baseline: {out['conv4_parameters']} parameters, test accuracy "
                 f"{out['conv4_test_accuracy']:.4f}")
    return out


def read_history(run: str | Path) -> list[dict[str, Any]]:
    path = Path(run) / HISTORY
    if not path.is_file():
        raise FileNotFoundError(f"{run} holds no {HISTORY}: not a `metalab nas search` run directory")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def steps_to_reach(history: list[dict[str, Any]], target: float) -> int | None:
    """The first recorded step whose validation accuracy is >= ``target`` (None: never)."""
    return next((entry["step"] for entry in history if entry["val_accuracy"] >= target), None)
