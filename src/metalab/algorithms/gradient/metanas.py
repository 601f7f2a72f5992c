"""MetaNAS (Elsken et al. 2020, "Meta-Learning of Neural Architectures for Few-Shot Learning", CVPR).

The meta-learned network is a DARTS one-shot network (:mod:`metalab.nas.space`): every cell edge mixes the
candidate operations with weights softmax(alpha / T). Both the weights w and the architecture alpha are
meta-learned with Reptile (section 3, eq. 5-6 of the paper, with Reptile as the meta-learner):

    task t:  (w_t, alpha_t) = k steps of first-order DARTS on the task's training data from (w, alpha)
    meta:    w     <- w     + eps_w     * mean_t (w_t - w)
             alpha <- alpha + eps_alpha * mean_t (alpha_t - alpha)

Here a task step moves w and alpha together, each with its own Adam (beta1 = 0), on the same support
minibatch (the authors' code uses the support set as the DARTS "validation" data too, and steps alpha, then
w, on it; metalab takes both steps from the one gradient). ``meta_step`` writes the pseudo-gradients
w - mean(w_t) and (eps_alpha / eps_w) * (alpha - mean(alpha_t)) into ``.grad``, so that the trainer's SGD with
lr = eps_w performs both updates (``alpha_meta_scale`` = eps_alpha / eps_w, the paper's 0.6 / 1.0).

At meta-test time alpha adapts per task as w does. Section 4.2's annealing: within each task the softmax
temperature T goes linearly from ``temperature_max`` to ``temperature_min`` over the inner steps, so that the
mixture nears a one-hot architecture and pruning it costs little; at evaluation, operations whose weight is
below ``prune_threshold`` are removed before the queries are scored (the authors' ``alpha_prune_threshold``).
During the first ``warm_up_steps`` meta-steps alpha neither adapts nor meta-learns (the authors'
``warm_up_epochs``). :meth:`MetaNAS.genotype` derives the discrete meta-architecture (DARTS's rule).

As in the authors' Omniglot setting, ``pairwise_inputs`` adds weights over the pairs of each node's inputs
(annealed and pruned like the operations' weights, :mod:`metalab.nas.space`), and ``drop_path`` zeroes candidate
outputs per example during meta-training's inner steps (not at evaluation). What still differs from the
authors' code is listed in ``docs/nas.md``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from metalab.algorithms.gradient.reptile import Reptile, ReptileOptions
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nas.genotype import Genotype
from metalab.nas.operations import FEW_SHOT_OPERATIONS
from metalab.nas.space import PRUNED, SearchNetwork, SpaceOptions, alpha_names, check_space, search_classifier
from metalab.nn.batch_norm import Record
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import Params, UpdateRule


@dataclass
class MetaNASOptions(ReptileOptions):
    #: candidate operations of every edge (the paper's few-shot set by default).
    operations: list[str] = field(default_factory=lambda: list(FEW_SHOT_OPERATIONS))
    #: cells, channels C of the first cell, intermediate nodes per cell, reduction cells, stem multiplier
    #: (the paper's Omniglot network: 4 cells, C = 28, 3 nodes, reductions at cells 1 and 3).
    cells: int = 4
    channels: int = 28
    nodes: int = 3
    reductions: list[int] | None = field(default_factory=lambda: [1, 3])
    stem_multiplier: int = 3
    #: weights over the pairs of each node's inputs (the authors' ``--use_pairwise_input_alphas``).
    pairwise_inputs: bool = False
    #: drop-path probability of the candidate operations in meta-training's inner steps (the authors' 0.2).
    drop_path: float = 0.0
    #: the inner Adam's learning rate of alpha (the weights use ``inner_lr``); 0 freezes alpha.
    alpha_lr: float = 0.005
    #: eps_alpha / eps_w: alpha's meta step relative to the weights' (the paper: 0.6 / 1.0).
    alpha_meta_scale: float = 0.6
    #: meta-steps before alpha adapts and meta-learns.
    warm_up_steps: int = 0
    #: the softmax temperature at the first and the last inner step (linear in between).
    temperature_max: float = 1.0
    temperature_min: float = 0.05
    #: at evaluation, operations of weight softmax(alpha / T) below this are removed (0: none).
    prune_threshold: float = 0.01


@dataclass
class ScaledSteps(UpdateRule):
    """``rule``'s step, with the step of each name in ``scales`` multiplied: phi_n + s_n * (rule(phi)_n - phi_n)
    (alpha's own learning rate on the weights' Adam)."""

    rule: UpdateRule
    scales: Mapping[str, float]

    def __post_init__(self) -> None:
        self.stateless = self.rule.stateless

    def tensors(self) -> dict[str, Tensor]:
        return self.rule.tensors()

    def init(self, fast: Mapping[str, Tensor], adapted: Any) -> Any:
        return self.rule.init(fast, adapted)

    def step(self, fast, grads, state, k, tensors):
        stepped, state = self.rule.step(fast, grads, state, k, tensors)
        for name, scale in self.scales.items():
            if name in grads:
                stepped[name] = fast[name] + scale * (stepped[name] - fast[name])
        return stepped, state


@register("metanas")
class MetaNAS(Reptile):
    options: MetaNASOptions

    def __init__(self, options: MetaNASOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        if options.alpha_lr < 0 or options.alpha_meta_scale < 0 or options.warm_up_steps < 0:
            raise ValueError(f"learner.alpha_lr, learner.alpha_meta_scale and learner.warm_up_steps must be >= 0, got "
                             f"{options.alpha_lr}, {options.alpha_meta_scale}, {options.warm_up_steps}")
        if not 0 <= options.drop_path < 1:
            raise ValueError(f"learner.drop_path must be in [0, 1), got {options.drop_path}")
        if not 0 < options.temperature_min <= options.temperature_max:
            raise ValueError(f"learner.temperature_min and temperature_max must satisfy 0 < min <= max, got "
                             f"{options.temperature_min}, {options.temperature_max}")
        if options.alpha_lr > 0 and options.inner_lr <= 0:
            raise ValueError("learner.inner_lr must be > 0 when alpha adapts (alpha's step is scaled from it)")
        super().__init__(options, input_shape, speed)
        self.register_buffer("meta_steps", torch.zeros((), dtype=torch.long))
        self._inner_step: int | None = None

    meta_steps: Tensor

    def make_network(self, options: Any, input_shape: tuple[int, ...]) -> nn.Module:
        if len(input_shape) != 3:
            raise ValueError(f"MetaNAS needs image inputs (C, H, W), got input shape {input_shape}")
        space = SpaceOptions(list(options.operations), options.cells, options.channels, options.nodes,
                             None if options.reductions is None else list(options.reductions),
                             options.stem_multiplier, options.pairwise_inputs)
        check_space(space, prefix="learner.")
        return search_classifier(space, input_shape, options.ways)

    @property
    def body(self) -> SearchNetwork:
        return cast(SearchNetwork, cast(nn.Sequential, self.network).body)

    def alpha_adapts(self) -> bool:
        return self.options.alpha_lr > 0 and int(self.meta_steps) >= self.options.warm_up_steps

    def adapted_names(self) -> list[str]:
        alphas = set(alpha_names(self.network))
        names = [name for name, _ in self.network.named_parameters() if name not in alphas]
        return names + (sorted(alphas) if self.alpha_adapts() else [])

    def update_rule(self, training: bool) -> UpdateRule:
        rule = super().update_rule(training)
        if not self.alpha_adapts() or self.options.alpha_lr == self.options.inner_lr:
            return rule
        scale = self.options.alpha_lr / self.options.inner_lr
        return ScaledSteps(rule, {name: scale for name in alpha_names(self.network)})

    def temperature(self, k: int, steps: int) -> float:
        """T at inner step k of ``steps``: linear from temperature_max to temperature_min (the last step's T
        scores the queries); temperature_max while alpha does not adapt."""
        high, low = self.options.temperature_max, self.options.temperature_min
        if not self.alpha_adapts():
            return high
        if steps <= 1:
            return low
        return high - min(k, steps - 1) * (high - low) / (steps - 1)

    def network_forward(self, params: Mapping[str, Tensor], x: Tensor, training: bool, record: Record | None = None,
                        inner: bool = False, differentiated_twice: bool = False) -> Tensor:
        steps = self.inner_steps(training)
        if inner and self._inner_step is not None:
            k, self._inner_step = self._inner_step, self._inner_step + 1
        else:
            k = steps - 1
        self.body.temperature = self.temperature(k, steps)
        self.body.drop_prob = self.options.drop_path if training and inner else 0.0
        return super().network_forward(params, x, training, record, inner, differentiated_twice)

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, training: bool,
                    indices: list[Tensor] | None = None) -> Params:
        self._inner_step = 0  # counts the inner loop's forward passes: one per step
        try:
            return super().adapt_tasks(support_x, support_y, training, indices)
        finally:
            self._inner_step = None

    def query_outputs(self, fast: Params, query_x: Tensor, training: bool, record: Record | None = None) -> Tensor:
        if not training and self.options.prune_threshold > 0:
            fast = self.pruned(fast)
        return super().query_outputs(fast, query_x, training, record)

    def pruned(self, fast: Params) -> Params:
        """``fast`` with every alpha entry whose weight at the final temperature is below ``prune_threshold``
        set to the pruning value (weight exactly 0; the others renormalise)."""
        steps = self.inner_steps(False)
        temperature = self.temperature(steps - 1, steps)
        out = dict(fast)
        for name in alpha_names(self.network):
            weights = torch.softmax(fast[name] / temperature, dim=-1)
            out[name] = fast[name].masked_fill(weights < self.options.prune_threshold, PRUNED)
        return out

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        """Reptile's pseudo-gradients for w and alpha (alpha's scaled by ``alpha_meta_scale``); the metrics add
        the meta-architecture before the step (:meth:`alpha_metrics`), which the trainer logs."""
        adapting = self.alpha_adapts()
        metrics = {**super().meta_step(batch), **self.alpha_metrics()}
        params = self.parameters_by_name()
        for name in alpha_names(self.network):
            grad = params[name].grad
            if grad is not None:
                grad.mul_(self.options.alpha_meta_scale if adapting else 0.0)
        self.meta_steps += 1
        return metrics

    @torch.no_grad()
    def alpha_metrics(self) -> dict[str, Tensor]:
        """``alpha/<normal|reduce>/<operation>``: each operation's softmax(alpha) at temperature 1 averaged over
        the cell's edges (``metalab plot RUN`` draws them against the meta-step)."""
        out = {}
        for kind, alpha in (("normal", self.body.alpha_normal), ("reduce", self.body.alpha_reduce)):
            weights = torch.softmax(alpha.detach(), dim=-1).mean(dim=0)
            out.update({f"alpha/{kind}/{op}": weights[o] for o, op in enumerate(self.body.operations)})
        return out

    def genotype(self) -> Genotype:
        """The discrete meta-architecture: DARTS's top-2 edges per node of softmax(alpha)."""
        return self.body.genotype()
