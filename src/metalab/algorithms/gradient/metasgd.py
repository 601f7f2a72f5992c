"""Meta-SGD (Li et al. 2017): MAML whose inner learning rates are meta-learned too.

The inner step is phi <- phi - alpha (.) grad L_support(phi) (eq. 3) with a rate tensor alpha of each adapted
parameter's shape (``lr_per: element``, the paper's choice) or one rate per tensor (``lr_per: tensor``);
alpha receives its meta-gradient through MAML's meta-step, as theta does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from metalab.algorithms.gradient.base import GradientOptions
from metalab.algorithms.gradient.maml import MAML
from metalab.algorithms.registry import register
from metalab.nn.execution import SpeedOptions
from metalab.nn.inner_loop import LearnedRates, UpdateRule


@dataclass
class MetaSGDOptions(GradientOptions):
    #: "element" (a rate per parameter entry, as in the paper) or "tensor" (a rate per parameter tensor).
    lr_per: str = "element"
    #: initial rates drawn uniformly from [low, high] (the paper: [0.005, 0.1]); None = all ``inner_lr``.
    lr_init_range: list[float] | None = None


@register("metasgd")
class MetaSGD(MAML):
    options: MetaSGDOptions

    def __init__(self, options: MetaSGDOptions, input_shape: tuple[int, ...],
                 speed: SpeedOptions | None = None) -> None:
        super().__init__(options, input_shape, speed)
        if options.lr_per not in ("element", "tensor"):
            raise ValueError(f"learner.lr_per must be 'element' or 'tensor', got {options.lr_per!r}")
        init_range = None if options.lr_init_range is None else [float(bound) for bound in options.lr_init_range]
        if init_range is not None and not (len(init_range) == 2 and all(map(math.isfinite, init_range))
                                           and 0 <= init_range[0] <= init_range[1]):
            raise ValueError(f"learner.lr_init_range must be [low, high] with 0 <= low <= high, got {init_range}")
        params = self.parameters_by_name()
        rates = []
        for name in self.adapted_names():
            shape = params[name].shape if options.lr_per == "element" else ()
            rate = torch.full(shape, float(options.inner_lr) if init_range is None else init_range[0])
            if init_range is not None and init_range[1] > init_range[0]:
                rate.uniform_(*init_range)
            rates.append(nn.Parameter(rate))
        #: one learned rate tensor per adapted parameter, in the order of ``adapted_names()``.
        self.inner_lrs = nn.ParameterList(rates)

    def update_rule(self, training: bool) -> UpdateRule:
        return LearnedRates(dict(zip(self.adapted_names(), self.inner_lrs)))
