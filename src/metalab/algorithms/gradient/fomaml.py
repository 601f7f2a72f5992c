"""First-order MAML (Finn et al. 2017, section 5.2): MAML without the second-order terms.

The inner gradients are treated as constants, so the meta-gradient is the query-loss gradient at
the adapted weights (no backward pass through the inner loop).
"""
from __future__ import annotations

from dataclasses import dataclass

from metalab.algorithms.gradient.common import GradientLearner, GradientOptions
from metalab.algorithms.registry import register


@dataclass
class FOMAMLOptions(GradientOptions):
    first_order: bool = True


@register("fomaml")
class FirstOrderMAML(GradientLearner):
    Options = FOMAMLOptions

    def __init__(self, options: FOMAMLOptions, input_shape: tuple[int, ...]) -> None:
        if not options.first_order:
            raise ValueError("fomaml is first order by definition; use learner.name=maml for second order")
        super().__init__(options, input_shape)
