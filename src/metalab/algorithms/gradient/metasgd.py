"""Meta-SGD (Li et al. 2017): MAML whose inner learning rates are meta-learned too.

Every adapted parameter tensor has a learning-rate tensor of its own shape (``lr_per: element``, the
paper's choice) or one rate (``lr_per: tensor``); the inner step is theta - alpha * grad and alpha
receives its meta-gradient through the same backward pass as theta.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn

from metalab.algorithms.gradient.common import GradientLearner, GradientOptions
from metalab.algorithms.registry import register


@dataclass
class MetaSGDOptions(GradientOptions):
    #: "element" (a rate per parameter entry, as in the paper) or "tensor" (a rate per parameter tensor).
    lr_per: str = "element"
    #: initial rates drawn uniformly from [low, high] (the paper: [0.005, 0.1]); None = all ``inner_lr``.
    lr_init_range: Optional[List[float]] = None


@register("metasgd")
class MetaSGD(GradientLearner):
    Options = MetaSGDOptions

    def __init__(self, options: MetaSGDOptions, input_shape: tuple[int, ...]) -> None:
        super().__init__(options, input_shape)
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

    def learning_rates(self) -> dict[str, Tensor]:
        return dict(zip(self.adapted_names(), self.inner_lrs))
