"""MT-net (Lee & Choi 2018): T-net whose inner loop adapts only the units that meta-learned masks choose.

Each task draws a binary mask M per output unit (channel) of every transformed layer; the inner step
updates only the chosen units' weights (the paper's learned subspace):

    W <- W - alpha * M (.) grad_W L,     M_j ~ Bernoulli(sigmoid(zeta_j)), drawn once per task

relaxed as in the paper and the authors' code (``yoonholee/MT-net``, ``--share_M``): a two-class
Gumbel-softmax of the logits [zeta_j, 0] at temperature tau, with the straight-through estimator (the hard
sample forward, the relaxed sample's gradient backward). softmax([zeta + g_1, g_2] / tau)_1 =
sigmoid((zeta + l) / tau) with l = g_1 - g_2 a logistic sample, which is how it is computed here. A unit's
mask covers its row of the weight, its bias and the BatchNorm weight and bias of its channel (the authors'
BatchNorm is not adapted at all; metalab's MAML adapts it). As in the authors' code the masks are drawn at
evaluation too; zeta starts at ``mask_logit_init`` (their ``logit_init``, 0: P(adapt) = 1/2).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metalab.algorithms.gradient.base import GradientOptions
from metalab.algorithms.gradient.tnet import TNet
from metalab.algorithms.registry import register
from metalab.data.task import Task
from metalab.nn.batch_norm import NORMS
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import UpdateRule


@dataclass
class MTNetOptions(GradientOptions):
    #: zeta's initial value for every unit (P(the unit adapts) = sigmoid(zeta)); the authors' code: 0.
    mask_logit_init: float = 0.0
    #: tau, the Gumbel-softmax temperature of the relaxed masks (the authors' code: 1).
    mask_temperature: float = 1.0


@dataclass
class LogisticNoise:
    """Logistic samples l [tasks, units] per mask key for a whole meta-batch, handed out slice by slice in order,
    so that the masks a task draws do not depend on how the execution slices the meta-batch."""

    rows: dict[str, Tensor]
    start: int = 0

    @classmethod
    def draw(cls, logits: Mapping[str, Tensor], tasks: int) -> LogisticNoise:
        return cls({key: torch.logit(torch.rand(tasks, *zeta.shape, dtype=zeta.dtype, device=zeta.device), eps=1e-6)
                    for key, zeta in logits.items()})

    def take(self, tasks: int) -> dict[str, Tensor]:
        """The next ``tasks`` tasks' samples."""
        rows = {key: value[self.start:self.start + tasks] for key, value in self.rows.items()}
        self.start += tasks
        return rows


@dataclass
class UnitMasks(UpdateRule):
    """phi <- phi - lr * M (.) g, with straight-through Gumbel-softmax masks per unit drawn once per task.

    ``groups``: adapted name -> (mask key, the axis of the units in the name's [T, ...] tensors); a name
    without a group takes plain SGD steps. The logistic noise is taken at the first step (from ``drawn``, the
    meta-batch's draws, else drawn here) and kept in ``noise`` (one rule per adaptation), so every step of a
    task, and any recomputation of a step, uses its masks.
    """

    lr: float
    groups: Mapping[str, tuple[str, int]]
    logits: Mapping[str, Tensor]
    temperature: float
    drawn: LogisticNoise | None = None
    noise: dict[str, Tensor] = field(default_factory=dict)

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.logits)

    def masks(self, tensors: Mapping[str, Tensor], tasks: int) -> dict[str, Tensor]:
        """Each mask key's straight-through mask [T, units]: the hard value forward, the relaxed gradient."""
        if not self.noise:  # l = g_1 - g_2
            self.noise = (self.drawn or LogisticNoise.draw(tensors, tasks)).take(tasks)
        masks = {}
        for key, zeta in tensors.items():
            score = zeta + self.noise[key]
            soft = torch.sigmoid(score / self.temperature)
            masks[key] = (score > 0).to(soft.dtype) + (soft - soft.detach())
        return masks

    def step(self, fast, grads, state, k, tensors):
        masks = self.masks(tensors, next(iter(grads.values())).shape[0])
        stepped = dict(fast)
        for name, grad in grads.items():
            if name in self.groups:
                key, axis = self.groups[name]
                shape = [grad.shape[0]] + [1] * (grad.dim() - 1)
                shape[axis] = grad.shape[axis]
                grad = masks[key].view(shape) * grad
            stepped[name] = torch.sub(fast[name], grad, alpha=self.lr)
        return stepped, None


def unit_groups(network: nn.Module, transformed: list[str], adapted: list[str]) -> dict[str, tuple[str, int]]:
    """Each adapted parameter's mask (its transformed layer, or the one whose channels its BatchNorm normalises)
    and the axis of the units in its per-task tensor [T, ...]."""
    owners = dict(network.named_modules())
    groups: dict[str, tuple[str, int]] = {}
    last: str | None = None
    normalised: dict[str, str] = {}
    for name, module in network.named_modules():  # a BatchNorm takes the mask of the layer before it
        if name in transformed:
            last = name
        elif isinstance(module, NORMS) and last is not None:
            normalised[name] = last
    for name in adapted:
        owner = name.rpartition(".")[0]
        if owner in transformed:
            groups[name] = (owner, 1)  # weight [T, out, ...] and bias [T, out]
        elif owner in normalised and owners[owner].num_features == network.get_parameter(name).shape[-1]:
            groups[name] = (normalised[owner], network.get_parameter(name).dim())  # [T, (steps,) C]
    return groups


@register("mtnet")
class MTNet(TNet):
    """T-net whose inner steps are masked per output unit by meta-learned, sampled binary masks."""

    options: MTNetOptions

    def __init__(self, options: MTNetOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if not options.mask_temperature > 0:
            raise ValueError(f"learner.mask_temperature must be > 0 (the Gumbel-softmax temperature; the authors "
                             f"use 1), got {options.mask_temperature}")
        units = {name: self.network.get_parameter(f"{name}.weight").shape[0] for name in self.transformed_layers}
        #: zeta per transformed layer (its name with '-' for '.'): one logit per output unit
        logit = float(options.mask_logit_init)
        self.mask_logits = nn.ParameterDict({name.replace(".", "-"): nn.Parameter(torch.full((count,), logit))
                                             for name, count in units.items()})
        self.mask_groups = {name: (layer.replace(".", "-"), axis) for name, (layer, axis)
                            in unit_groups(self.network, self.transformed_layers, self.adapted_names()).items()}

        self._noise: LogisticNoise | None = None  # the current meta-batch's draws

    def update_rule(self, training: bool) -> UpdateRule:
        return UnitMasks(self.options.inner_lr, self.mask_groups, dict(self.mask_logits.items()),
                         self.options.mask_temperature, self._noise)

    def meta_step(self, batch: Task) -> dict[str, Tensor]:
        self._noise = LogisticNoise.draw(dict(self.mask_logits.items()), len(batch))  # before slicing
        try:
            return super().meta_step(batch)
        finally:
            self._noise = None

    def predict(self, batch: Task, steps: int | None = None) -> Tensor:
        self._noise = LogisticNoise.draw(dict(self.mask_logits.items()), len(batch))
        try:
            return super().predict(batch, steps)
        finally:
            self._noise = None
